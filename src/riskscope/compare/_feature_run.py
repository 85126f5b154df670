"""Feature universality from two SAE folders and their live models: read the same tokens (or texts), pair, save.

:func:`open_sae` reads an SAE folder (riskscope's, SAELens's or sparsify's) with the model, hook point
and layer it records; :func:`sae_model` says which model to load for it (a randomly initialised copy when
the SAE was trained on one). :func:`compare_features` runs both models over the same token windows
(token-aligned rows, one tokenizer) or the same texts (``per_text``: each latent's mean over the text's
tokens, any tokenizers), accumulates :class:`LatentStats` batch by batch and returns a
:class:`FeatureComparison`, saved as ``features.json`` (format ``riskscope-compare-features/1``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import RiskscopeError
from ..hooks import HookPoint, iter_captures, tokenize
from ..models import LoadedModel
from ..sae import (Corpus, SparseAutoencoder, Window, check_sae_width, corpus_windows, load_sae, pooled_latents,
                   read_density, sae_point, text_windows)
from ._features import FeatureCompareConfig, FeaturePairing, LatentStats, NullTest, pair_features

FEATURES_FORMAT = "riskscope-compare-features/1"
RANDOM_INIT_TAG = "random-init:"


@dataclass(frozen=True, eq=False)
class SAESide:
    """One SAE folder: the SAE, its cfg.json, the hook point it reads and the model it was trained on."""

    path: Path
    """The folder."""
    sae: SparseAutoencoder
    """The SAE (weights read raw activations)."""
    cfg: dict
    """Its cfg.json."""
    point: HookPoint
    """The hook point it reads."""
    model: str | None
    """``metadata.model_name`` (None when the folder does not say)."""
    random_init_seed: int | None
    """Seed of the randomly initialised copy of ``model`` it was trained on, or None."""
    prepend_bos: bool
    """Whether its training windows started with BOS."""

    def describe(self) -> dict:
        return {"path": str(self.path), "model": self.model, "random_init_seed": self.random_init_seed,
                "point": str(self.point), "d_in": self.sae.d_in, "d_sae": self.sae.d_sae, "arch": self.sae.arch}


def open_sae(path: str | Path) -> SAESide:
    """Read an SAE folder and what it records about its model and hook point (one-line errors)."""
    p = Path(path)
    sae, cfg = load_sae(p)
    point = sae_point(cfg, p / "cfg.json")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    ours = meta.get("riskscope") if isinstance(meta.get("riskscope"), dict) else {}
    name = meta.get("model_name", cfg.get("model_name"))
    seed = None
    wh = ours.get("model_weight_hash")
    if isinstance(wh, str) and wh.startswith(RANDOM_INIT_TAG):
        try:
            seed = int(wh.split(":")[1])
        except (IndexError, ValueError):
            raise RiskscopeError(f"{p / 'cfg.json'}: metadata.riskscope.model_weight_hash {wh!r} is malformed") from None
        if isinstance(name, str) and " (random init" in name:
            name = name.split(" (random init")[0]
    return SAESide(p, sae, cfg, point, name if isinstance(name, str) and name else None, seed,
                   bool(meta.get("prepend_bos", True)))


def sae_model(side: SAESide, override: str | None = None) -> tuple[str, int | None]:
    """(model to load, seed of the random-init copy to make of it or None) for an SAE folder."""
    if override:
        return override, None
    if side.model is None:
        raise RiskscopeError(f"{side.path / 'cfg.json'}: field metadata.model_name missing; pass the model "
                             f"explicitly (--model-a / --model-b)")
    return side.model, side.random_init_seed


def same_tokenizer(a: LoadedModel, b: LoadedModel) -> bool:
    """Whether two models tokenise alike: the same tokenizer, the same vocabulary, or (tokenizers without a
    vocabulary) the same type giving the same ids on a probe text."""
    ta, tb = a.tokenizer, b.tokenizer
    if ta is tb:
        return True
    va, vb = getattr(ta, "get_vocab", None), getattr(tb, "get_vocab", None)
    if va is not None and vb is not None:
        return va() == vb()
    probe = ["The quick brown fox jumps over 12 lazy dogs; def f(x): return x"]
    return type(ta) is type(tb) and list(ta(probe)["input_ids"][0]) == list(tb(probe)["input_ids"][0])


def check_inputs(a: SAESide, lm_a: LoadedModel, b: SAESide, lm_b: LoadedModel, cfg: FeatureCompareConfig) -> bool:
    """Refuse an SAE whose width is not its model's, and token-aligned mode across tokenizers; returns whether
    the tokenizers match."""
    for side, lm, tag in ((a, lm_a, "SAE_A"), (b, lm_b, "SAE_B")):
        if side.point.layer >= lm.n_layers or side.point.layer < -lm.n_layers:
            raise RiskscopeError(f"{side.path / 'cfg.json'}: hook point {side.point} but model {lm.model_id} has "
                                 f"{lm.n_layers} layers")
        check_sae_width(side.sae, side.point.width(lm), f"{tag} {side.path}: model {lm.model_id}'s {side.point}")
    same = same_tokenizer(lm_a, lm_b)
    if not same and not cfg.per_text:
        raise RiskscopeError(f"{a.path} ({lm_a.model_id}) and {b.path} ({lm_b.model_id}) use different tokenizers: "
                             f"token-aligned feature comparison needs one tokenizer; pass --per-text to correlate "
                             f"per-text mean activations")
    return same


def _token_windows(lm: LoadedModel, cfg: FeatureCompareConfig, prepend: bool, corpus: Corpus | None,
                   texts: Sequence[str] | None) -> list[Window]:
    """Windows whose read tokens add up to at least ``cfg.tokens`` (or every text of ``texts``)."""
    if texts is not None:
        return text_windows(lm, texts, prepend)
    out, n = [], 0
    for w in corpus_windows(lm, corpus, cfg.context, prepend):
        out.append(w)
        n += len(w.ids) - w.skip
        if n >= cfg.tokens:
            break
    if not out:
        raise RiskscopeError(f"corpus {corpus.name!r} yields no window to read")
    return out


def _captures(lm_a: LoadedModel, pa: HookPoint, lm_b: LoadedModel, pb: HookPoint, ids: list[list[int]],
              order: np.ndarray, bs: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(rows, mask, x_A, x_B) per batch; one forward pass when both SAEs read the same model."""
    pa, pb = pa.normalised(lm_a), pb.normalised(lm_b)
    if lm_a is lm_b:
        for rows, mask, got in iter_captures(lm_a, ids, order, sorted({pa, pb}, key=str), "all", bs):
            yield rows, mask, got[pa], got[pb]
        return
    it_b = iter_captures(lm_b, ids, order, [pb], "all", bs)
    for (rows, mask, got), (_, _, got_b) in zip(iter_captures(lm_a, ids, order, [pa], "all", bs), it_b):
        yield rows, mask, got[pa], got_b[pb]


@torch.no_grad()
def _token_stats(a: SAESide, lm_a: LoadedModel, b: SAESide, lm_b: LoadedModel, windows: list[Window],
                 cfg: FeatureCompareConfig, progress: Callable[[str], None] | None) -> tuple[LatentStats, int]:
    st = LatentStats(a.sae.d_sae, b.sae.d_sae, cfg.contexts)
    ids = [list(w.ids) for w in windows]
    width = max(len(x) for x in ids)
    order = np.argsort([-len(x) for x in ids], kind="stable")
    done = 0
    for rows, mask, xa, xb in _captures(lm_a, a.point, lm_b, b.point, ids, order, cfg.batch_size):
        sel, tok, first, lab = [], [], [], []
        for j, r in enumerate(rows):
            w, n = windows[int(r)], int(mask[j].sum())
            pos = np.arange(w.skip, n)
            sel.append((j, w.skip, n))
            tok.append(np.asarray(w.ids[w.skip:n], np.int64))
            first.append(pos == w.skip)
            lab.append(int(r) * width + pos)
        xa_T = torch.cat([xa[j, s:n] for j, s, n in sel]).to("cpu", torch.float32)
        xb_T = torch.cat([xb[j, s:n] for j, s, n in sel]).to("cpu", torch.float32)
        st.update(a.sae.encode(xa_T), b.sae.encode(xb_T), np.concatenate(tok), np.concatenate(first),
                  np.concatenate(lab))
        done += len(rows)
        if progress:
            progress(f"reading windows {done}/{len(windows)}")
    return st, width


def _corpus_texts(lm: LoadedModel, corpus: Corpus, tokens: int) -> list[str]:
    out, n = [], 0
    for t in corpus.texts():
        out.append(t)
        n += len(tokenize(lm, [t])[0])
        if n >= tokens:
            break
    return out


def _context(tok, ids: Sequence[int], peak: int, lo: int, radius: int) -> str:
    decode = getattr(tok, "decode", None)

    def piece(i: int) -> str:
        return decode([int(i)]) if decode is not None else f"<{int(i)}>"

    left = "".join(piece(i) for i in ids[max(lo, peak - radius):peak])
    right = "".join(piece(i) for i in ids[peak + 1:peak + 1 + radius])
    return f"{left}[[{piece(ids[peak])}]]{right}".replace("\n", "⏎")


@dataclass(frozen=True)
class FeatureComparison:
    """Two SAEs' features compared: the pairing, the junk filter, the decoder tests and the best pairs."""

    config: FeatureCompareConfig
    sae_a: dict
    """Folder, model, point and shape of SAE A."""
    sae_b: dict
    """The same for SAE B."""
    mode: str
    """``tokens`` (token-aligned rows) or ``per_text`` (per-text mean latents)."""
    pairing: FeaturePairing
    """Best match in B of every latent of A, junk masks, SVCCA and RSA of the paired decoder rows."""
    top: list = field(default_factory=list)
    """The best-matched pairs: ``{a, b, corr, mutual, density_a, density_b, contexts_a, contexts_b}``."""
    info: dict = field(default_factory=dict)
    """Rows read, tokenizers, seconds."""

    def summary(self) -> dict:
        pr = self.pairing
        kept = pr.kept_a
        corr = pr.corr[kept]
        return {"latents_a": int(len(pr.best_b)), "latents_b": int(len(next(iter(pr.junk_b.values())))),
                "kept_a": int(kept.sum()), "kept_b": int((~np.logical_or.reduce(list(pr.junk_b.values()))).sum()),
                "junk_a": {k: int(v.sum()) for k, v in pr.junk_a.items()},
                "junk_b": {k: int(v.sum()) for k, v in pr.junk_b.items()},
                "mean_corr": float(np.nanmean(corr)) if len(corr) else None,
                "median_corr": float(np.nanmedian(corr)) if len(corr) else None,
                "share_corr_above_0.5": float(np.mean(corr > 0.5)) if len(corr) else None,
                "share_corr_above_0.9": float(np.mean(corr > 0.9)) if len(corr) else None,
                "mutual": int(pr.mutual.sum()), "distinct_b_matched": int(len(np.unique(pr.best_b[kept]))),
                "n_rows": pr.n_rows}

    def to_dict(self) -> dict:
        from .._io import json_float

        pr = self.pairing
        return {"format": FEATURES_FORMAT, "config": asdict(self.config), "sae_a": self.sae_a, "sae_b": self.sae_b,
                "mode": self.mode, "summary": self.summary(),
                "svcca": pr.svcca.to_dict() if pr.svcca else None, "rsa": pr.rsa.to_dict() if pr.rsa else None,
                "top": self.top, "info": self.info,
                "pairs": {"best_b": pr.best_b.tolist(), "corr": [json_float(x) for x in pr.corr],
                          "mutual": pr.mutual.astype(int).tolist()},
                "junk": {"a": {k: np.nonzero(v)[0].tolist() for k, v in pr.junk_a.items()},
                         "b": {k: np.nonzero(v)[0].tolist() for k, v in pr.junk_b.items()}}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "features.json") -> "FeatureComparison":
        if not isinstance(d, dict) or d.get("format") != FEATURES_FORMAT:
            raise RiskscopeError(f"{where}: not a riskscope feature comparison (format {FEATURES_FORMAT!r})")
        try:
            known = FeatureCompareConfig.__dataclass_fields__
            cfg = FeatureCompareConfig(**{k: v for k, v in (d.get("config") or {}).items() if k in known})
            p = d["pairs"]
            fa, fb = int(d["sae_a"]["d_sae"]), int(d["sae_b"]["d_sae"])

            def masks(x: dict, n: int) -> dict:
                out = {}
                for k, idx in x.items():
                    m = np.zeros(n, bool)
                    m[np.asarray(idx, np.int64)] = True
                    out[k] = m
                return out

            pr = FeaturePairing(np.asarray(p["best_b"], np.int64), np.array([np.nan if c is None else c
                                                                                for c in p["corr"]], float),
                                np.asarray(p["mutual"], bool), masks(d["junk"]["a"], fa), masks(d["junk"]["b"], fb),
                                NullTest.from_dict(d["svcca"]) if d.get("svcca") else None,
                                NullTest.from_dict(d["rsa"]) if d.get("rsa") else None,
                                int(d["summary"]["n_rows"]))
            return cls(cfg, dict(d["sae_a"]), dict(d["sae_b"]), str(d["mode"]), pr, list(d.get("top") or []),
                       dict(d.get("info") or {}))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise RiskscopeError(f"{where}: field {e} missing or malformed") from None

    def save(self, path: str | Path) -> Path:
        from .._io import atomic_json

        return atomic_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "FeatureComparison":
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text(encoding="utf-8")), str(p))
        except json.JSONDecodeError as e:
            raise RiskscopeError(f"{p}: not valid JSON ({e})") from None


def compare_features(a: SAESide, lm_a: LoadedModel, b: SAESide, lm_b: LoadedModel, cfg: FeatureCompareConfig,
                     corpus: Corpus | None = None, texts: Sequence[str] | None = None,
                     progress: Callable[[str], None] | None = None) -> FeatureComparison:
    """Compare the features of SAE ``a`` (on ``lm_a``) and SAE ``b`` (on ``lm_b``, may be ``lm_a``) over
    ``texts`` (e.g. a dataset's) or ``cfg.tokens`` tokens of ``corpus``. Every check runs before the first
    forward pass."""
    if (corpus is None) == (texts is None):
        raise RiskscopeError("give a corpus or texts to read, not both")
    if texts is not None and not len(texts):
        raise RiskscopeError("no texts to read")
    same = check_inputs(a, lm_a, b, lm_b, cfg)
    if corpus is not None:
        corpus.check()
    t0 = time.perf_counter()
    dens = (None, None)
    if cfg.per_text:
        txt = list(texts) if texts is not None else _corpus_texts(lm_a, corpus, cfg.tokens)
        if progress:
            progress(f"reading {len(txt)} texts with A")
        pa = pooled_latents(lm_a, a.sae, a.point, txt, "mean", cfg.batch_size, a.prepend_bos)
        if progress:
            progress(f"reading {len(txt)} texts with B")
        pb = pooled_latents(lm_b, b.sae, b.point, txt, "mean", cfg.batch_size, b.prepend_bos)
        st = LatentStats(a.sae.d_sae, b.sae.d_sae, cfg.contexts)
        for s in range(0, len(txt), 256):
            st.update(torch.from_numpy(pa.z_NF[s:s + 256]), torch.from_numpy(pb.z_NF[s:s + 256]))
        dens = ((pa.fires_F, pa.n_tokens), (pb.fires_F, pb.n_tokens))
        rows_info = {"texts": len(txt), "tokens_a": pa.n_tokens, "tokens_b": pb.n_tokens}
        width = 0
    else:
        windows = _token_windows(lm_a, cfg, a.prepend_bos, corpus, texts)
        st, width = _token_stats(a, lm_a, b, lm_b, windows, cfg, progress)
        rows_info = {"windows": len(windows), "tokens": st.n}
    t1 = time.perf_counter()
    dec_a, dec_b = a.sae.W_dec.detach().double().numpy(), b.sae.W_dec.detach().double().numpy()
    pr = pair_features(st, dec_a, dec_b, cfg, dens, progress)
    top = _top_pairs(st, pr, cfg, lm_a, lm_b, windows if not cfg.per_text else None, width,
                     txt if cfg.per_text else None, dens)
    dens_train = {k: read_density(s.path) is not None for k, s in (("a", a), ("b", b))}
    info = {**rows_info, "same_tokenizer": same, "same_model": lm_a is lm_b, "model_a": lm_a.model_id,
            "model_b": lm_b.model_id, "seconds_read": round(t1 - t0, 2),
            "seconds_pair": round(time.perf_counter() - t1, 2), "training_density_file": dens_train,
            "source": (corpus.name if corpus is not None else "texts")}
    return FeatureComparison(cfg, a.describe(), b.describe(), "per_text" if cfg.per_text else "tokens", pr, top, info)


def _top_pairs(st: LatentStats, pr: FeaturePairing, cfg: FeatureCompareConfig, lm_a: LoadedModel,
               lm_b: LoadedModel, windows: list[Window] | None, width: int, texts: list[str] | None,
               dens) -> list[dict]:
    ok = np.nonzero(pr.kept_a)[0]
    order = ok[np.argsort(-pr.corr[ok], kind="stable")][:cfg.top_pairs]

    def contexts(vals: np.ndarray, labs: np.ndarray, tok) -> list[str]:
        out = []
        for v, lab in zip(vals, labs):
            if not np.isfinite(v) or lab < 0:
                continue
            if windows is not None:
                w = windows[int(lab) // width]
                out.append(_context(tok, w.ids, int(lab) % width, w.skip, cfg.radius))
            else:
                t = texts[int(lab)]
                out.append((t[:160] + ("…" if len(t) > 160 else "")).replace("\n", "⏎"))
        return out

    def density(side: str, f: int) -> float:
        if dens[0] is not None:
            fires, n = dens[0 if side == "a" else 1]
            return float(fires[f] / max(n, 1))
        return float((st.fires_a if side == "a" else st.fires_b)[f] / max(st.n, 1))

    rows = []
    for i in order:
        j = int(pr.best_b[i])
        rows.append({"a": int(i), "b": j, "corr": float(pr.corr[i]), "mutual": bool(pr.mutual[i]),
                     "density_a": density("a", int(i)), "density_b": density("b", j),
                     "contexts_a": contexts(st.top_val_a[i], st.top_row_a[i], lm_a.tokenizer),
                     "contexts_b": contexts(st.top_val_b[j], st.top_row_b[j], lm_b.tokenizer)})
    return rows


__all__ = ["FEATURES_FORMAT", "FeatureComparison", "SAESide", "check_inputs", "compare_features", "open_sae",
           "same_tokenizer", "sae_model"]
