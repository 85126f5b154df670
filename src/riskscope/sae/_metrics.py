"""How good an SAE is: sparsity and reconstruction on held-out tokens, and what splicing it into the model costs.

Fraction of variance unexplained, three ways (each named, since published numbers disagree):

* ``fvu``: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, the mean taken over all evaluated tokens
  (the conventional definition; SAELens's fixed ``explained_variance`` after SAELens#659);
* ``fvu_legacy``: the per-token ratio ||x - x_hat||^2 / ||x - mean_batch(x)||^2 averaged over
  tokens (SAELens / SAEBench ``explained_variance_legacy``);
* ``fvu_about_zero``: sum ||x - x_hat||^2 / sum ||x||^2, variance measured around zero (what
  SAELens's ``explained_variance`` computed before the SAELens#659 fix; inflated when the mean
  is large).

>>> x = torch.randn(100, 4) + 3
>>> round(reconstruction_metrics(x, x)["fvu"], 6), round(reconstruction_metrics(x, x.mean(0).expand_as(x))["fvu"], 6)
(0.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..hooks import HookPoint, current_mask, on_activation, pad_batch, run_batch
from ..models import LoadedModel
from ._model import SparseAutoencoder
from ._source import Window


def reconstruction_metrics(x_ND: Tensor, recon_ND: Tensor, batch: int = 4096) -> dict:
    """FVU three ways (see the module doc) and the mean squared error of ``recon_ND`` against ``x_ND``."""
    x, r = x_ND.double(), recon_ND.double()
    resid = (x - r).pow(2).sum(-1)
    total = (x - x.mean(0)).pow(2).sum()
    legacy = []
    for a in range(0, x.shape[0], batch):
        xb = x[a:a + batch]
        den = (xb - xb.mean(0)).pow(2).sum(-1).clamp_min(1e-12)
        legacy.append(resid[a:a + batch] / den)
    return {"fvu": float(resid.sum() / total.clamp_min(1e-12)),
            "fvu_legacy": float(torch.cat(legacy).mean()) if legacy else math.nan,
            "fvu_about_zero": float(resid.sum() / x.pow(2).sum().clamp_min(1e-12)),
            "mse": float(resid.mean())}


@torch.no_grad()
def sae_eval(sae: SparseAutoencoder, x_ND: Tensor, batch: int = 4096) -> dict:
    """L0 and reconstruction metrics of ``sae`` on held-out activations."""
    recon, l0 = [], []
    for a in range(0, x_ND.shape[0], batch):
        out = sae(x_ND[a:a + batch])
        recon.append(out.recon_ND.float())
        l0.append((out.acts_NF > 0).sum(-1).float())
    l0_all = torch.cat(l0)
    return {"tokens": int(x_ND.shape[0]), "l0": float(l0_all.mean()),
            **reconstruction_metrics(x_ND, torch.cat(recon))}


def _replacer(windows: Sequence[Window], rows: Sequence[int], fn: Callable[[Tensor], Tensor]):
    """A hook body replacing the activation at every trained-on position (not padding, not BOS) by ``fn(x)``."""

    def edit(x: Tensor) -> Tensor:
        mask = current_mask()
        keep = mask.bool().clone() if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool)
        keep = keep.to(x.device)
        for j, r in enumerate(rows):
            keep[j, :windows[r].skip] = False
        new = fn(x.reshape(-1, x.shape[-1])).reshape(x.shape).to(x.dtype)
        return torch.where(keep[..., None], new, x)

    return edit


@torch.no_grad()
def splice_metrics(lm: LoadedModel, point: HookPoint, sae: SparseAutoencoder, windows: Sequence[Window],
                   mean_D: Tensor, batch_size: int = 8) -> dict:
    """Next-token CE and KL when ``point`` is replaced by the SAE's reconstruction, by zeros (zero-ablation)
    or by the training mean (mean-ablation), on ``windows``; CE loss recovered against both ablations:
    ``(CE_ablated - CE_sae) / (CE_ablated - CE_clean)``."""
    point = point.normalised(lm)
    kinds: dict[str, Callable[[Tensor], Tensor] | None] = {
        "clean": None,
        "sae": lambda x: sae(x.float()).recon_ND,
        "zero": lambda x: torch.zeros_like(x),
        "mean": lambda x: mean_D.to(x.device, x.dtype).expand_as(x),
    }
    ce = {k: 0.0 for k in kinds}
    kl = {k: 0.0 for k in kinds if k != "clean"}
    n_tok = 0
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    for b in range(0, len(order), batch_size):
        rows = order[b:b + batch_size]
        input_ids, mask = pad_batch([list(windows[r].ids) for r in rows], lm.tokenizer.pad_token_id, "right",
                                    lm.device)
        target = input_ids[:, 1:]
        valid = mask[:, 1:].bool()
        for j, r in enumerate(rows):  # predict only from positions the SAE was trained on
            valid[j, :max(windows[r].skip - 1, 0)] = False
        logp_clean = None
        for kind, fn in kinds.items():
            if fn is None:
                logits = run_batch(lm, input_ids, mask).logits
            else:
                with on_activation(lm, point, _replacer(windows, rows, fn)):
                    logits = run_batch(lm, input_ids, mask).logits
            logp = torch.log_softmax(logits[:, :-1].float(), -1)
            nll = -logp.gather(-1, target[..., None])[..., 0]
            ce[kind] += float(nll[valid].sum())
            if kind == "clean":
                logp_clean = logp
            else:
                p = logp_clean.exp()
                kl[kind] += float((p * (logp_clean - logp)).sum(-1)[valid].sum())
        n_tok += int(valid.sum())
    ce = {k: v / max(n_tok, 1) for k, v in ce.items()}
    kl = {k: v / max(n_tok, 1) for k, v in kl.items()}

    def recovered(abl: str) -> float | None:
        den = ce[abl] - ce["clean"]
        return None if abs(den) < 1e-9 else (ce[abl] - ce["sae"]) / den

    return {"tokens": n_tok, "ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero_ablation": ce["zero"],
            "ce_mean_ablation": ce["mean"], "ce_loss_recovered_vs_zero": recovered("zero"),
            "ce_loss_recovered_vs_mean": recovered("mean"), "kl_sae": kl["sae"], "kl_zero_ablation": kl["zero"],
            "kl_mean_ablation": kl["mean"]}


__all__ = ["reconstruction_metrics", "sae_eval", "splice_metrics"]
