"""Transfer learning curve: AUC on ``cyber_risk_heldout`` of probes trained on 25-100 % of the built-in pairs.

For each share and seed (the same category-stratified draws as bench/learning_curve.py), a
:class:`riskscope.probes.LogisticProbe` with the bundle's C is fitted at the bundle's point on the drawn
rows of the run's store, and scores the held-out texts (their activations are captured once); the lexical
transfer model (:func:`riskscope.pipeline.fit_lexical`, as ``riskscope evaluate`` trains it) is
fitted on the same rows' texts.

    python bench/eval_heldout_curve.py --run /tmp/eval_run [--seeds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from riskscope.data import load_dataset
from riskscope.pipeline import fit_lexical, open_run_store
from riskscope.probes import LogisticProbe, Probe, pair_accuracy

_spec = importlib.util.spec_from_file_location("learning_curve", Path(__file__).with_name("learning_curve.py"))
lc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="/tmp/eval_run")
    ap.add_argument("--dataset", default="cyber_risk_heldout")
    ap.add_argument("--fractions", default="0.25,0.5,0.75,1.0")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    run = Path(args.run)
    store, probe = open_run_store(run), Probe.load(run)
    C = float(probe.meta.get("C", 0.01))
    X = store.read(probe.point)
    rows = store.rows
    y = np.asarray([int(r["label"]) for r in rows])
    groups = np.asarray([r["pair_id"] for r in rows])
    texts = [r["text"] for r in rows]
    cats: dict[str, list[str]] = {}
    for r in rows:
        if r["label"] == 1:
            cats.setdefault(r["category"], []).append(r["pair_id"])
    held = load_dataset(args.dataset)
    lm = probe.load_model()
    Xh = probe.features(lm, held.texts)
    yh, gh = held.labels, np.asarray(held.pair_ids)
    out = []
    for frac in [float(f) for f in args.fractions.split(",")]:
        for seed in range(args.seeds if frac < 1 else 1):
            keep = lc.subset_pairs(cats, frac, seed)
            idx = np.flatnonzero([g in keep for g in groups])
            est = LogisticProbe(C=C).fit(X[idx], y[idx])
            s = est.decision_function(Xh)
            lex, _ = fit_lexical([texts[i] for i in idx], y[idx], groups[idx], seed=seed)
            sl = lex.decision_function(held.texts)
            out.append({"fraction": frac, "seed": seed, "pairs": len(keep),
                        "probe_auc": float(roc_auc_score(yh, s)), "probe_pair_accuracy": pair_accuracy(yh, s, gh),
                        "lexical_auc": float(roc_auc_score(yh, sl)), "lexical_pair_accuracy": pair_accuracy(yh, sl, gh)})
            print(json.dumps(out[-1]), flush=True)
    print(f"\nprobe {probe.name} ({probe.positions}, C {C}) trained on a share of the built-in pairs, scoring "
          f"{held.name}\n")
    print("| share of pairs | pairs | probe AUC on held-out (mean, min-max) | probe pair acc. | lexical AUC on held-out "
          "(mean, min-max) | lexical pair acc. |")
    print("|---:|---:|---:|---:|---:|---:|")
    for frac in sorted({r["fraction"] for r in out}):
        rs = [r for r in out if r["fraction"] == frac]
        pa, la = np.array([r["probe_auc"] for r in rs]), np.array([r["lexical_auc"] for r in rs])
        print(f"| {frac:.0%} | {rs[0]['pairs']} | {pa.mean():.3f} ({pa.min():.3f}-{pa.max():.3f}) | "
              f"{np.mean([r['probe_pair_accuracy'] for r in rs]):.3f} | {la.mean():.3f} ({la.min():.3f}-{la.max():.3f}) | "
              f"{np.mean([r['lexical_pair_accuracy'] for r in rs]):.3f} |")


if __name__ == "__main__":
    main()
