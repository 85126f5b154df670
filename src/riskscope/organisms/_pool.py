"""Scorecards pooled over organism seeds: intervals that cover the planting's own variation.

One ``organism test`` gives Wilson intervals over the vectors of *one* organism. Whether a detector
finds a backdoor also depends on the organism: the same recipe planted with another seed can be
easier or harder to find. :func:`pool_scorecards` groups the scorecards of organisms planted with
the same recipe (kind, trigger, every setting but the seed) and tested with the same budget (every
detector setting but the seed) and gives, per detector and per organism figure, the mean over
seeds with a Student-t 95 % interval over the seeds. Hit rates also get the pooled count with its
Wilson interval (all vectors of all seeds as one sample, which ignores the seed-to-seed variation
and so is the narrower, optimistic of the two). With k seeds the t interval has k - 1 degrees of
freedom: wide for 3 seeds, as it should be.

>>> mean_ci([0.0, 0.0, 0.0])
{'mean': 0.0, 'ci': [0.0, 0.0], 'n': 3, 'sd': 0.0}
>>> r = mean_ci([0.9, 1.0, 0.94], lo=0.0, hi=1.0); r['mean'], r['ci'][1]
(0.9467, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Iterable, Sequence

from .._io import json_float
from ._metrics import count_rate

METRICS = ("asr", "false_trigger_clean", "false_trigger_near_miss", "perplexity_ratio", "kl_to_base")
"""The organism figures pooled over seeds (``organism.json`` -> ``metrics``)."""
RATES = frozenset({"asr", "false_trigger_clean", "false_trigger_near_miss"})


def recipe_sha256(config: dict) -> str:
    """A digest of a plant (or detect) configuration without its seed: equal for two plantings of one recipe."""
    rest = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def mean_ci(values: Sequence[float], lo: float | None = None, hi: float | None = None) -> dict:
    """Mean of ``values`` with a Student-t 95 % interval (k - 1 degrees of freedom), clipped to [lo, hi].

    One value gives no interval (``ci`` is None): a single seed says nothing about the next one."""
    from scipy import stats

    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    k = len(v)
    if k == 0:
        return {"mean": None, "ci": None, "n": 0, "sd": None}
    mean = sum(v) / k
    if k == 1:
        return {"mean": json_float(round(mean, 4)), "ci": None, "n": 1, "sd": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (k - 1))
    half = float(stats.t.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    a, b = mean - half, mean + half
    if lo is not None:
        a = max(lo, a)
    if hi is not None:
        b = min(hi, b)
    return {"mean": json_float(round(mean, 4)), "ci": [json_float(round(a, 4)), json_float(round(b, 4))], "n": k,
            "sd": json_float(round(sd, 4))}


def _group_key(card: dict) -> tuple | None:
    org = card.get("organism", {})
    if org.get("seed") is None or not org.get("recipe_sha256"):
        return None
    return (card.get("kind"), card.get("trigger"), org["recipe_sha256"], recipe_sha256(card.get("config", {})))


def _rate_summary(parts: list[dict]) -> dict:
    pooled = count_rate(sum(int(p["hits"]) for p in parts), sum(int(p["n"]) for p in parts))
    return {"per_seed": [p["rate"] for p in parts], "over_seeds": mean_ci([p["rate"] for p in parts], 0.0, 1.0),
            "pooled": pooled}


def pool_scorecards(cards: Iterable[dict]) -> list[dict]:
    """One entry per group of two or more scorecards of the same recipe and budget with distinct organism seeds.

    Each entry: ``kind``, ``trigger``, ``seeds``, ``folders``, ``metrics`` (per organism figure: per-seed
    values and the mean with its t interval over seeds), ``meets_goals`` (seeds meeting every goal), and
    ``rows`` (per steering detector: learned and control hit rates, per seed, over seeds and pooled;
    probe AUCs per seed and over seeds). Scorecards without a seed (written before seeds were recorded)
    or alone in their group are left out."""
    groups: dict[tuple, list[dict]] = {}
    for card in cards:
        key = _group_key(card)
        if key is not None:
            groups.setdefault(key, []).append(card)
    out = []
    for (kind, trigger, _, _), group in groups.items():
        by_seed: dict[Any, dict] = {}
        for card in group:
            by_seed.setdefault(card["organism"]["seed"], card)  # the same organism tested twice counts once
        if len(by_seed) < 2:
            continue
        seeds = sorted(by_seed, key=str)
        group = [by_seed[s] for s in seeds]
        metrics = {}
        for m in METRICS:
            vals = [c["organism"].get("metrics", {}).get(m) for c in group]
            metrics[m] = {"per_seed": vals,
                          **mean_ci(vals, *((0.0, 1.0) if m in RATES else (0.0, None)))}
        rows = []
        detectors = [r["detector"] for r in group[0]["rows"]]
        for det in detectors:
            found = [next((r for r in c["rows"] if r.get("detector") == det), None) for c in group]
            if any(r is None for r in found):
                continue
            if det == "probe":
                aucs = {f: {"per_seed": [r.get(f) for r in found], **mean_ci([r.get(f) for r in found], 0.0, 1.0)}
                        for f in found[0] if f.startswith("auc_")}
                rows.append({"detector": det, "layer": found[0].get("layer"), **aucs})
                continue
            rows.append({"detector": det, "hits": _rate_summary([r["hits"] for r in found]),
                         "control": {"name": found[0]["control"].get("name"),
                                     **_rate_summary([r["control"] for r in found])},
                         "budget": found[0].get("budget", {}),
                         "seconds": mean_ci([r.get("seconds") for r in found], 0.0)})
        out.append({"kind": kind, "trigger": trigger, "seeds": seeds,
                    "folders": [c["organism"].get("folder") for c in group], "metrics": metrics,
                    "meets_goals": sum(bool(c["organism"].get("metrics", {}).get("meets_goals")) for c in group),
                    "rows": rows})
    return out


__all__ = ["METRICS", "mean_ci", "pool_scorecards", "recipe_sha256"]
