"""The probe sections' charts: metrics per layer, ROC curves, score by severity (via :mod:`.._charts`)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from .._charts import BLUE, GREEN, GREY, ORANGE, PURPLE, VERMILION, Chart, new_figure, plain, to_chart
from .._run import Baseline, Curve, LayerResult, Predictions


def _finite(values) -> bool:
    return any(math.isfinite(v) for v in values)


def layer_chart(results: list[LayerResult], lexical: Baseline | None, best: LayerResult | None, hook: str,
                key: str) -> Chart:
    """AUC (with 95% CI band), F1, pair accuracy, shuffled-label AUC, lexical baseline and chance per layer."""
    fig, ax = new_figure(9.0, 3.9)
    x = np.array([r.layer for r in results])
    plotted: list[float] = [0.5]

    def line(values, **kw):
        if _finite(values):
            ax.plot(x, values, marker="o", markersize=3.5, linewidth=1.8, **kw)
            plotted.extend(v for v in values if math.isfinite(v))

    lo = np.array([r.auc_ci[0] for r in results])
    hi = np.array([r.auc_ci[1] for r in results])
    if _finite(lo) and _finite(hi):
        ax.fill_between(x, lo, hi, color=BLUE, alpha=0.18, linewidth=0, label="AUC 95% CI")
        plotted.extend(v for v in np.concatenate([lo, hi]) if math.isfinite(v))
    line([r.auc for r in results], color=BLUE, label="AUC", zorder=4)
    line([r.f1 for r in results], color=ORANGE, label="F1")
    line([r.pair_accuracy for r in results], color=GREEN, label="pair accuracy")
    line([r.shuffled_auc for r in results], color=GREY, label="shuffled-label AUC (control)", alpha=0.9)
    if lexical is not None and math.isfinite(lexical.auc):
        ax.axhline(lexical.auc, color=VERMILION, linestyle="--", linewidth=1.6,
                   label=f"lexical baseline AUC ({lexical.auc:.2f})")
        plotted.append(lexical.auc)
    ax.axhline(0.5, color="black", linestyle=":", linewidth=1.2, label="chance (0.5)")
    if best is not None and best.hook == hook and math.isfinite(best.auc):
        ax.plot([best.layer], [best.auc], marker="*", markersize=15, color=BLUE, markeredgecolor="white",
                linestyle="none", zorder=5, label=f"best: layer {best.layer} (AUC {best.auc:.2f})")
    ax.set_ylim(min(0.4, math.floor(min(plotted) * 10) / 10), 1.0)
    if len(x) <= 12:
        ax.set_xticks(x)
        if len(x) == 1:
            ax.set_xlim(x[0] - 1, x[0] + 1)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("score")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return to_chart(fig, f"Per-layer metrics for hook {hook}", key)


def _thin(c: Curve, n: int = 600) -> Curve:
    if len(c.fpr) <= n:
        return c
    keep = np.unique(np.linspace(0, len(c.fpr) - 1, n).astype(int))
    return Curve(c.fpr[keep], c.tpr[keep])


def roc_chart(results: list[LayerResult], lexical: Baseline | None, key: str = "roc") -> Chart:
    """ROC curves of the given results plus the lexical baseline and the chance diagonal."""
    fig, ax = new_figure(5.6, 4.8)
    for r, color in zip(results, (BLUE, PURPLE, GREEN)):
        c = _thin(r.roc)
        ax.plot(c.fpr, c.tpr, color=color, linewidth=1.9, label=f"{plain(r.name, 32)}  (AUC {r.auc:.2f})")
    if lexical is not None and lexical.roc is not None:
        c = _thin(lexical.roc)
        auc = f"{lexical.auc:.2f}" if math.isfinite(lexical.auc) else "n/a"
        ax.plot(c.fpr, c.tpr, color=VERMILION, linestyle="--", linewidth=1.6, label=f"lexical baseline  (AUC {auc})")
    ax.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1.1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false-positive rate (benign flagged)")
    ax.set_ylabel("true-positive rate (risky caught)")
    ax.legend(loc="lower right", fontsize=8.5, frameon=True, framealpha=0.9)
    return to_chart(fig, "ROC curves of the best layers and the lexical baseline", key)


def severity_chart(p: Predictions, threshold: float, max_points: int = 300, key: str = "severity") -> Chart:
    """Box plot of the score per severity level with every text (or a sample) as a jittered dot."""
    levels = sorted(set(range(6)) | {int(s) for s in p.severity_N if s >= 0})
    fig, ax = new_figure(8.0, 3.9)
    rng = np.random.default_rng(0)
    groups = [p.score_N[p.severity_N == s] for s in levels]
    ax.boxplot([g if len(g) else [np.nan] for g in groups], positions=range(len(levels)), widths=0.55,
               showfliers=False, medianprops=dict(color="black", linewidth=1.5),
               boxprops=dict(color="#444"), whiskerprops=dict(color="#444"), capprops=dict(color="#444"))
    for label, color, name, shift in ((0, BLUE, "benign", -0.1), (1, VERMILION, "risky", 0.1)):
        xs, ys = [], []
        for pos, s in enumerate(levels):
            idx = np.flatnonzero((p.severity_N == s) & (p.label_N == label))
            if len(idx) > max_points:
                idx = rng.choice(idx, max_points, replace=False)
            xs.extend(pos + shift + rng.uniform(-0.12, 0.12, len(idx)))
            ys.extend(p.score_N[idx])
        if xs:
            ax.scatter(xs, ys, s=12, color=color, alpha=0.7, linewidths=0, label=f"{name} text", zorder=3)
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xticks(range(len(levels)), [f"{s}\nn={len(g)}" for s, g in zip(levels, groups)])
    ax.set_xlim(-0.6, len(levels) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("severity (0 = benign or harmless, 5 = most severe)")
    ax.set_ylabel("probe score (P risky)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return to_chart(fig, "Probe score by severity level", key)


__all__ = ["layer_chart", "roc_chart", "severity_chart"]
