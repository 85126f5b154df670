"""Risk features: which SAE latents tell risky texts from their benign twins, and do they matter?

:func:`risk_features` runs four analyses on a paired dataset and writes nothing itself:

1. **Paired differences**: each latent's activation (pooled over a text's tokens) on the risky text minus its
   benign twin; mean with a pair-bootstrap CI, Cohen's d_z, a Wilcoxon signed-rank test and
   Benjamini-Hochberg q-values over all latents.
2. **Probe direction**: the cosine of a dense probe's direction (the given :class:`~riskscope.probes.Probe`
   when it reads the SAE's hook point, else a probe fitted on the dataset) with every decoder row, against
   isotropic random directions.
3. **Sparse probe**: logistic probes on the ``k`` most different latents (chosen inside each training fold)
   against the dense probe on the raw activations, out-of-fold AUC with CIs on the same grouped folds,
   plus ``k`` random live latents as a control.
4. **Clamping**: the top risk latent's decoder direction added (on benign texts) and the latent ablated
   (on risky texts) in the live model; next-token effects (:func:`~riskscope.effects.run_effects`) set
   against latents of about the same density.

:func:`risk_reading` words the result plainly, null results included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .._io import json_float
from ..data import Dataset
from ..effects import run_effects
from ..errors import RiskscopeError
from ..hooks import HookPoint
from ..models import LoadedModel
from ..probes import LogisticProbe, Probe
from ._model import SparseAutoencoder
from ._stats import cosine_null, grouped_probe_auc, paired_feature_stats
from ._texts import POOLS, pooled_latents, text_windows


@dataclass(frozen=True)
class RiskConfig:
    """How the risk-feature analysis runs."""

    pool: str = "mean"
    """Token pooling of a text's latents: mean, max or last."""
    n_boot: int = 1000
    """Bootstrap resamples of pairs for every CI."""
    level: float = 0.95
    """CI level."""
    fdr: float = 0.05
    """False-discovery rate for calling a latent different (Benjamini-Hochberg)."""
    top: int = 20
    """Latents listed per direction."""
    ks: tuple[int, ...] = (1, 8, 32)
    """Latents in the sparse probes."""
    folds: int = 5
    """Grouped cross-validation folds."""
    C: float = 0.1
    """Inverse L2 strength of every logistic probe."""
    n_random_directions: int = 1000
    """Random directions in the cosine null."""
    effect_texts: int = 64
    """Texts (of each label) the clamping is measured on."""
    n_random_features: int = 5
    """Latents of matching density clamped as the control."""
    seed: int = 0
    """Seed of folds, bootstraps and random choices."""
    batch_size: int = 16
    """Texts per forward."""

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise RiskscopeError(f"unknown pooling {self.pool!r}; use one of {', '.join(POOLS)}")
        if not 0 < self.level < 1 or not 0 < self.fdr < 1:
            raise RiskscopeError("level and fdr must lie strictly between 0 and 1")
        if self.folds < 2 or self.top < 1 or self.effect_texts < 1 or self.n_random_features < 1:
            raise RiskscopeError("folds must be >= 2; top, effect_texts and n_random_features >= 1")
        if not self.ks or min(self.ks) < 1:
            raise RiskscopeError(f"sparse-probe sizes must be >= 1, got {list(self.ks)}")


@dataclass(frozen=True, eq=False)
class RiskFeatures:
    """The risk-feature analysis (arrays kept for the browser; :meth:`to_dict` for JSON)."""

    summary: dict
    """Everything reported, JSON-ready (lists, floats, the reading)."""
    stats: dict = field(repr=False)
    """Per-latent arrays: mean_diff, ci_low, ci_high, dz, z, p, q, nonzero_pairs, cos, density."""

    def to_dict(self) -> dict:
        return self.summary

    def latents(self) -> dict[str, list]:
        """Per-latent d_z, q and cosine with the probe (4 significant digits), for the browser's sorting."""
        return {k: [float(f"{v:.4g}") if np.isfinite(v) else None for v in self.stats[k]] for k in ("dz", "q", "cos")}


class FeatureAblation:
    """A hook operation removing one latent's contribution ``a_f(x) * W_dec[f]`` at every position (duck-types a
    :mod:`riskscope.hooks` operation: ``point``, ``positions`` and a call on the activation)."""

    def __init__(self, point: HookPoint, sae: SparseAutoencoder, feature: int):
        self.point, self.positions, self.sae, self.feature = point, None, sae, int(feature)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        a = self.sae.encode(flat)[:, self.feature:self.feature + 1]  # (N, 1)
        return (flat - a * self.sae.W_dec[self.feature].float()).reshape(x.shape).to(x.dtype)


class _AddDirection:
    """Add ``vector`` at every position (the same as :class:`~riskscope.hooks.Add`, kept here for the same
    float32 arithmetic as :class:`FeatureAblation`)."""

    def __init__(self, point: HookPoint, vector: torch.Tensor):
        self.point, self.positions, self.vector = point, None, vector

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.vector.to(x.device, x.dtype)


def paired_rows(ds: Dataset) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Row indices of the risky and the benign text of every complete pair, and labels and pair ids of the rows
    (risky, benign, risky, ...); fewer than 10 complete pairs is an error."""
    risky: dict[str, int] = {}
    benign: dict[str, int] = {}
    for i, r in enumerate(ds.rows):
        if r.pair_id is not None:
            (risky if r.label == 1 else benign)[r.pair_id] = i
    both = [g for g in risky if g in benign]
    if len(both) < 10:
        raise RiskscopeError(f"dataset {ds.name} has {len(both)} complete risky/benign pairs; risk features need "
                             f"at least 10")
    rows = [i for g in both for i in (risky[g], benign[g])]
    y = np.array([ds.rows[i].label for i in rows])
    groups = np.array([ds.rows[i].pair_id for i in rows])
    return [risky[g] for g in both], [benign[g] for g in both], y, groups


def _feature_rows(stats: dict, idx, density) -> list[dict]:
    return [{"feature": int(f), "mean_diff": json_float(stats["mean_diff"][f]),
             "ci": [json_float(stats["ci_low"][f]), json_float(stats["ci_high"][f])],
             "dz": json_float(stats["dz"][f]), "p": json_float(stats["p"][f]), "q": json_float(stats["q"][f]),
             "cos_probe": json_float(stats["cos"][f]), "density": json_float(density[f])} for f in idx]


def _matched_features(density: np.ndarray, target: int, exclude: np.ndarray, n: int, seed: int) -> list[int]:
    """``n`` latents whose log-density is closest to ``target``'s, not in ``exclude`` (random among near ties)."""
    logd = np.log10(density + 1e-10)
    cand = np.setdiff1d(np.flatnonzero(density > 0), np.append(exclude, target))
    if len(cand) == 0:
        return []
    gap = np.abs(logd[cand] - logd[target])
    pool = cand[np.argsort(gap, kind="stable")[:max(4 * n, n)]]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist())


def _effects(lm, sae, point, texts, top: int, randoms: list[int], strength: dict[int, float], probes, cfg,
             progress) -> dict:
    """Add (benign texts) and ablate (risky texts) the top latent and each matched random one."""
    W = sae.W_dec.detach().float()
    norm_top = float(W[top].norm())
    benign, risky = texts
    add, abl = {}, {}
    for f in [top] + randoms:
        unit = W[f] / W[f].norm().clamp_min(1e-12)
        add[f"add {f}"] = [_AddDirection(point, unit * norm_top * strength[top])]
        abl[f"ablate {f}"] = [FeatureAblation(point, sae, f)]
    kw = dict(probes=probes, batch_size=cfg.batch_size)
    res_add = run_effects(lm, benign, add, progress=progress, **kw)
    res_abl = run_effects(lm, risky, abl, progress=progress, **kw)
    out = {}
    for kind, res in (("add", res_add), ("ablate", res_abl)):
        top_eff = res[f"{kind} {top}"]
        rand = [res[f"{kind} {f}"] for f in randoms]
        block = {"top": top_eff.to_dict(), "random": [r.to_dict() for r in rand]}
        for metric, attr in (("risk_dlogodds", "risk_odds_N"), ("kl", "kl_N")):
            t = getattr(top_eff, attr)
            R = np.stack([getattr(r, attr) for r in rand]) if rand else np.zeros((0, len(t)))
            block[metric] = _versus(t, R, cfg)
        out[kind] = block
    out["strength"] = json_float(strength[top])
    out["added_norm"] = json_float(norm_top * strength[top])
    return out


def _versus(t: np.ndarray, R: np.ndarray, cfg: RiskConfig) -> dict:
    """Top latent's mean effect vs the random latents': ranks and a text-bootstrap CI of the difference."""
    t = np.nan_to_num(t)
    mean_t = float(np.mean(t))
    if len(R) == 0:
        return {"top": mean_t, "random": [], "top_minus_random_ci": [None, None]}
    R = np.nan_to_num(R)
    diff = t - R.mean(0)
    rng = np.random.default_rng(cfg.seed)
    idx = rng.integers(0, len(diff), size=(cfg.n_boot, len(diff)))
    boot = diff[idx].mean(1)
    a = (1 - cfg.level) / 2
    means = R.mean(1)
    return {"top": mean_t, "random": [float(x) for x in means],
            "top_minus_random": float(diff.mean()),
            "top_minus_random_ci": [float(x) for x in np.quantile(boot, [a, 1 - a])],
            "abs_top_exceeds_all_random": bool(np.all(abs(mean_t) > np.abs(means)))}


def risk_features(lm: LoadedModel, sae: SparseAutoencoder, point: HookPoint, ds: Dataset,
                  cfg: RiskConfig = RiskConfig(), probe: Probe | None = None, density_F: np.ndarray | None = None,
                  prepend_bos: bool = True, progress: Callable[[str], None] | None = None) -> RiskFeatures:
    """The four analyses of the module docstring on the pairs of ``ds`` (needs >= 10 complete pairs).

    ``probe``: the run's probe; its direction is used when it reads ``point`` with the same width, else a
    probe is fitted on the pooled activations. ``density_F``: each latent's firing rate in training
    (``sparsity.safetensors``); the dataset's own token rate when None.
    """
    say = progress or (lambda s: None)
    point = point.normalised(lm)
    r_idx, b_idx, y, groups = paired_rows(ds)
    rows = [i for pair in zip(r_idx, b_idx) for i in pair]
    texts = [ds.rows[i].text for i in rows]
    say(f"encoding {len(texts)} texts")
    pooled = pooled_latents(lm, sae, point, texts, cfg.pool, cfg.batch_size, prepend_bos)
    X, Z = pooled.x_ND.astype(np.float64), pooled.z_NF.astype(np.float64)
    density = (np.asarray(density_F, np.float64) if density_F is not None
               else pooled.fires_F / max(pooled.n_tokens, 1))
    say("paired statistics")
    stats = paired_feature_stats(Z[y == 1], Z[y == 0], cfg.n_boot, cfg.level, cfg.seed)

    use_given = (probe is not None and probe.point.normalised(lm) == point and probe.n_features == sae.d_in)
    if use_given:
        direction, probe_src = probe.direction(), f"given probe {probe.name} ({probe.positions})"
        probes = [probe]
    else:
        est = LogisticProbe(C=cfg.C).fit(X, y)
        fitted = Probe(estimator=est, hook=point.hook, layer=point.layer, positions=cfg.pool,
                       meta={"fitted": "risk-feature pairs"}) if cfg.pool in ("mean", "last") else None
        direction = fitted.direction() if fitted else np.asarray(est.coef_).reshape(-1) / est.scale_
        probe_src = (f"fitted on the {len(y)} texts' {cfg.pool}-pooled activations (C={cfg.C})"
                     + ("" if probe is None else f"; the given probe {probe.name} reads another point"))
        probes = [fitted] if fitted else []
    say("probe direction against decoder rows")
    cosn = cosine_null(sae.W_dec.detach().float().numpy(), direction, cfg.n_random_directions, cfg.seed)
    stats["cos"] = cosn.pop("cos_F")
    stats["density"] = density

    say("sparse vs dense probes")
    ks = tuple(k for k in cfg.ks if k <= sae.d_sae)
    probes_auc = grouped_probe_auc(X, Z, y, groups, ks, cfg.folds, cfg.C, cfg.n_boot, cfg.level, cfg.seed)

    sig = stats["q"] <= cfg.fdr
    order = np.lexsort((-np.abs(stats["dz"]), stats["q"]))  # q first, then |d_z|
    up = [f for f in order if stats["mean_diff"][f] > 0][:cfg.top]
    down = [f for f in order if stats["mean_diff"][f] < 0][:cfg.top]
    by_cos = np.argsort(-np.abs(stats["cos"]), kind="stable")[:cfg.top]
    if not up:
        raise RiskscopeError("no latent is more active on risky texts than on their twins; nothing to clamp")
    top = int(up[0])
    randoms = _matched_features(density, top, np.flatnonzero(sig), cfg.n_random_features, cfg.seed)
    # each latent's mean activation on the tokens where it fires (its typical size when present)
    strength = {f: float(pooled.sum_F[f] / pooled.fires_F[f]) if pooled.fires_F[f] else 1.0 for f in [top] + randoms}
    n_eff = min(cfg.effect_texts, len(r_idx))
    # token ids as the SAE read them (BOS first when the tokenizer adds none, cut to the context)
    wins = text_windows(lm, [ds.rows[i].text for i in b_idx[:n_eff] + r_idx[:n_eff]], prepend_bos)
    eff_texts = ([list(w.ids) for w in wins[:n_eff]], [list(w.ids) for w in wins[n_eff:]])
    say(f"clamping latent {top} and {len(randoms)} matched latents on {n_eff} texts")
    effects = _effects(lm, sae, point, eff_texts, top, randoms, strength, probes, cfg, None)
    effects["top_feature"], effects["random_features"] = top, randoms
    effects["texts"] = n_eff

    rho = _spearman(np.abs(stats["cos"]), np.abs(stats["dz"]))
    summary = {
        "dataset": ds.name, "pairs": len(r_idx), "point": str(point), "pool": cfg.pool, "d_sae": sae.d_sae,
        "tokens_read": pooled.n_tokens, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                                   for k, v in cfg.__dict__.items()},
        "paired": {"test": "Wilcoxon signed-rank (normal approx.), BH over all latents", "fdr": cfg.fdr,
                   "significant": int(sig.sum()), "significant_up": int((sig & (stats["mean_diff"] > 0)).sum()),
                   "significant_down": int((sig & (stats["mean_diff"] < 0)).sum()),
                   "tested": int((stats["nonzero_pairs"] >= 6).sum()),
                   "up": _feature_rows(stats, up, density), "down": _feature_rows(stats, down, density)},
        "probe_direction": {"source": probe_src, **{k: json_float(v) if isinstance(v, float) else v
                                                    for k, v in cosn.items()},
                            "top_by_cos": _feature_rows(stats, by_cos, density),
                            "spearman_abs_cos_vs_abs_dz": json_float(rho)},
        "sparse_probe": probes_auc,
        "clamp": effects,
    }
    summary["reading"] = risk_reading(summary)
    return RiskFeatures(summary, stats)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ci(c) -> str:
    return "n/a" if c is None or c[0] is None else f"[{c[0]:.3f}, {c[1]:.3f}]"


def risk_reading(s: dict) -> list[str]:
    """Plain sentences on what the analysis shows, saying so when it shows nothing."""
    out = []
    pr = s["paired"]
    if pr["significant"] == 0:
        out.append(f"No latent differs between risky texts and their benign twins at FDR {pr['fdr']:g} "
                   f"({pr['tested']} latents fired often enough to test, {s['pairs']} pairs).")
    else:
        t = pr["up"][0]
        out.append(f"{pr['significant']} of {s['d_sae']} latents differ at FDR {pr['fdr']:g} "
                   f"({pr['significant_up']} more active on risky texts, {pr['significant_down']} on benign twins); "
                   f"the strongest risky-side latent {t['feature']} has d_z {t['dz']:.2f} (q {t['q']:.2g}).")
    pd = s["probe_direction"]
    aligned = pd["p_max"] is not None and pd["p_max"] <= 0.01
    out.append(f"Probe direction: the best-aligned decoder row has |cos| {pd['max_abs_cos']:.3f}, against "
               f"{pd['null_max_abs_cos_q99']:.3f} for the 99th percentile of random directions (p {pd['p_max']:.3g}): "
               + ("the probe is partly carried by individual latents." if aligned else
                  "no latent lines up with the probe more than chance; the probe reads a mixture."))
    probes = s["sparse_probe"]["probes"]
    dense = probes["dense"]
    best = max((k for k in probes if k.startswith("sae_top")), key=lambda k: probes[k]["auc"])
    b = probes[best]
    lo, hi = b.get("minus_dense_ci", [None, None])
    verdict = ("no worse than" if lo is not None and lo <= 0 <= hi else
               "better than" if lo is not None and lo > 0 else "worse than")
    rnd = probes.get(best.replace("top", "random"), {})
    out.append(f"Sparse probe: {best.replace('sae_top', '')} latents reach AUC {b['auc']:.3f} {_ci(b['ci'])}, "
               f"{verdict} the dense probe's {dense['auc']:.3f} {_ci(dense['ci'])} (difference CI {_ci([lo, hi])}); "
               f"as many random latents reach {rnd.get('auc', float('nan')):.3f}.")
    cl = s["clamp"]
    for kind, what in (("add", "adding its decoder direction to benign texts"),
                       ("ablate", "ablating it on risky texts")):
        v = cl[kind]["risk_dlogodds"]
        ci = v.get("top_minus_random_ci", [None, None])
        beats = ci[0] is not None and (ci[0] > 0 or ci[1] < 0)
        kl = cl[kind]["kl"]
        out.append(f"Clamping latent {cl['top_feature']}: {what} moves log P(risk words)/P(neutral words) by "
                   f"{v['top']:+.3f} nats vs {np.mean(v['random']) if v['random'] else float('nan'):+.3f} for "
                   f"{len(v['random'])} latents of matched density (difference CI {_ci(ci)}; KL {kl['top']:.2g} vs "
                   f"{np.mean(kl['random']) if kl['random'] else float('nan'):.2g}): "
                   + (("a specific effect, raising risk words." if ci[0] > 0 else
                       "a specific effect, lowering risk words" + (" (the opposite of what a risk feature's direction "
                                                                   "should do)." if kind == "add" else "."))
                      if beats else "not distinguishable from the random latents."))
    return out


__all__ = ["FeatureAblation", "RiskConfig", "RiskFeatures", "paired_rows", "risk_features", "risk_reading"]
