"""What the feature browser shows, computed in one streaming pass: per latent its top-activating contexts with
per-token activations, an activation histogram, its density, and the tokens its decoder row boosts and
suppresses through the unembedding (W_dec · W_U). The page itself is written by ``riskscope.report``.

Memory: one batch of windows' latents at a time, a (contexts x latents) table of the best windows so far,
and every non-zero activation as (latent, value) for the histograms (N tokens x L0 entries).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..hooks import HookPoint
from ..models import LoadedModel
from ._model import SparseAutoencoder
from ._source import Window
from ._texts import iter_text_latents

BROWSER_FORMAT = "riskscope-sae-browser/1"


def _sig(x: float, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits (None when not finite): small densities keep their precision."""
    x = float(x)
    return float(f"{x:.{digits}g}") if np.isfinite(x) else None


def _token_text(tok, i: int) -> str:
    decode = getattr(tok, "decode", None)
    return decode([int(i)]) if decode is not None else f"<{int(i)}>"


@torch.no_grad()
def logit_effects(lm: LoadedModel, sae: SparseAutoencoder, top: int = 8, chunk: int = 256) -> tuple[np.ndarray, ...]:
    """Each latent's decoder row through the final norm's gain and the unembedding: the ``top`` token ids it
    boosts and suppresses most and their logit weights, (F, top) each. Weight-only: the norm's
    data-dependent division is ignored, as in direct logit attribution."""
    norm = lm.layout.final_norm
    W_U = lm.layout.unembed.weight.detach().float()  # (V, D)
    if isinstance(norm, torch.nn.LayerNorm) or getattr(norm, "bias", None) is not None:
        gain, centre = norm.weight.detach().float(), True
    else:
        gain = norm(torch.ones(1, lm.d_model, dtype=W_U.dtype, device=W_U.device)).float()[0]
        centre = False
    F = sae.d_sae
    up_i, up_v = np.zeros((F, top), np.int64), np.zeros((F, top), np.float32)
    dn_i, dn_v = np.zeros((F, top), np.int64), np.zeros((F, top), np.float32)
    for a in range(0, F, chunk):
        rows = sae.W_dec[a:a + chunk].detach().float().to(W_U.device)
        if centre:
            rows = rows - rows.mean(-1, keepdim=True)
        logits = (rows * gain) @ W_U.T  # (chunk, V)
        v, i = logits.topk(top, -1)
        up_i[a:a + chunk], up_v[a:a + chunk] = i.cpu().numpy(), v.cpu().numpy()
        v, i = (-logits).topk(top, -1)
        dn_i[a:a + chunk], dn_v[a:a + chunk] = i.cpu().numpy(), -v.cpu().numpy()
    return up_i, up_v, dn_i, dn_v


def browser_data(lm: LoadedModel, sae: SparseAutoencoder, point: HookPoint, windows: Sequence[Window], *,
                 contexts: int = 5, radius: int = 10, bins: int = 20, top_tokens: int = 8, batch_size: int = 16,
                 density_F: np.ndarray | None = None, risk: dict | None = None, meta: dict | None = None) -> dict:
    """The browser's data (JSON-ready). ``windows``: token windows to read (special tokens skipped);
    ``density_F``: training density (``sparsity.safetensors``); ``risk``: per-latent arrays ``dz``, ``q``,
    ``cos`` (from :func:`~riskscope.sae.risk_features`) for sorting by risk relevance."""
    F, m = sae.d_sae, int(contexts)
    best_v = torch.full((m, F), -1.0)
    best_w = torch.full((m, F), -1, dtype=torch.long)
    best_t = torch.zeros((m, F), dtype=torch.long)  # token index of the max inside the window
    tok_acts: dict[tuple[int, int], np.ndarray] = {}  # (feature, window) -> activations of the context
    ids_of: dict[int, tuple[int, ...]] = {}
    feat_parts, val_parts = [], []
    fires = torch.zeros(F, dtype=torch.long)
    n_tok = 0
    for t in iter_text_latents(lm, sae, point, windows, batch_size):
        z = t.z_TF
        n_tok += len(t.ids)
        nz = z.nonzero()
        feat_parts.append(nz[:, 1].numpy().astype(np.int32))
        val_parts.append(z[nz[:, 0], nz[:, 1]].numpy().astype(np.float32))
        fires += (z > 0).sum(0)
        mx, arg = z.max(0)  # (F,)
        better = mx > best_v[-1]
        if not bool(better.any()):
            continue
        ids_of[t.index] = t.ids
        cand_v = torch.cat([best_v, mx[None]])
        cand_w = torch.cat([best_w, torch.full((1, F), t.index, dtype=torch.long)])
        cand_t = torch.cat([best_t, arg[None]])
        order = torch.sort(cand_v, dim=0, descending=True, stable=True).indices[:m]
        best_v, best_w, best_t = (torch.gather(c, 0, order) for c in (cand_v, cand_w, cand_t))
        for f in torch.nonzero(better)[:, 0].tolist():
            tok_acts[(f, t.index)] = z[:, f].numpy().copy()
    feats = np.concatenate(feat_parts) if feat_parts else np.zeros(0, np.int32)
    vals = np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32)
    up_i, up_v, dn_i, dn_v = logit_effects(lm, sae, top_tokens)
    vocab: dict[int, str] = {}

    def tid(i: int) -> int:
        if i not in vocab:
            vocab[i] = _token_text(lm.tokenizer, i)
        return int(i)

    order = np.argsort(feats, kind="stable")
    feats, vals = feats[order], vals[order]
    starts = np.searchsorted(feats, np.arange(F + 1))
    out_feats = []
    for f in range(F):
        v = vals[starts[f]:starts[f + 1]]
        hi = float(v.max()) if len(v) else 0.0
        hist = np.histogram(v, bins=bins, range=(0.0, hi if hi > 0 else 1.0))[0].tolist() if len(v) else []
        ctx = []
        for j in range(m):
            w = int(best_w[j, f])
            if w < 0 or float(best_v[j, f]) <= 0:
                continue
            acts = tok_acts.get((f, w))
            if acts is None:
                continue
            c = int(best_t[j, f])
            a, b = max(0, c - radius), min(len(acts), c + radius + 1)
            ids = ids_of[w][a:b]
            scale = hi if hi > 0 else 1.0
            ctx.append({"max": _sig(float(best_v[j, f])),
                        "tokens": [tid(i) for i in ids],
                        "acts": [int(round(99 * max(x, 0.0) / scale)) for x in acts[a:b]]})
        row = {"id": f, "fires": int(fires[f]), "max": _sig(hi), "hist": hist, "contexts": ctx,
               "boosts": [[tid(int(i)), _sig(float(x), 3)] for i, x in zip(up_i[f], up_v[f])],
               "suppresses": [[tid(int(i)), _sig(float(x), 3)] for i, x in zip(dn_i[f], dn_v[f])]}
        if density_F is not None:
            row["density"] = _sig(float(density_F[f]))
        if risk is not None:
            for key in ("dz", "q", "cos"):
                if key in risk:
                    row[key] = _sig(float(risk[key][f]))
        out_feats.append(row)
    return {"format": BROWSER_FORMAT, "point": str(point), "d_sae": F, "tokens_read": n_tok,
            "windows": len(windows), "bins": bins, "meta": meta or {},
            "vocab": {str(k): v for k, v in vocab.items()}, "features": out_feats}


__all__ = ["BROWSER_FORMAT", "browser_data", "logit_effects"]
