#!/usr/bin/env bash
# Train the default run with the current recipe (analyses skipped) and evaluate its bundle on the external
# set cyber_risk_heldout; the figures go to docs/evaluate.md.
#   bench/eval_heldout.sh [RUN_DIR] [EVAL_DIR]
# A finished run in RUN_DIR (it has manifest.json) is used as it is; delete it to train anew.
set -euo pipefail
RUN=${1:-/tmp/eval_run}
OUT=${2:-/tmp/eval_heldout}
PY=${PYTHON:-python}
if [ ! -f "$RUN/manifest.json" ]; then
    time "$PY" -m riskscope.cli run --out "$RUN" --skip all --no-report --json > "$RUN.json"
fi
time "$PY" -m riskscope.cli evaluate --probe "$RUN" --dataset cyber_risk_heldout --out "$OUT"
"$PY" - "$OUT/evaluation.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
p, l, d, m = r["probe_metrics"], r["lexical"], r["delta_auc"], r["lexical_misses"]
ci = lambda c: f"{c[0]:.3f}-{c[1]:.3f}"
print(f"probe {r['probe']['name']} ({r['probe']['positions']}): AUC {p['auc']:.3f} ({ci(p['auc_ci'])}), "
      f"pair accuracy {p['pair_accuracy']:.3f} ({ci(p['pair_accuracy_ci'])}), F1 {p['f1']:.3f} ({ci(p['f1_ci'])}), "
      f"accuracy {p['accuracy']:.3f} ({ci(p['accuracy_ci'])}), ECE {r['calibration']['ece']:.3f}")
print(f"lexical transfer: AUC {l['auc']:.3f} ({ci(l['auc_ci'])}), pair accuracy {l['pair_accuracy']:.3f} "
      f"({ci(l['pair_accuracy_ci'])}), C {l['C']}")
print(f"delta AUC {d['value']:+.3f} ({ci(d['ci'])}), p = {d['p_value']:.3f}; on the {m['n_pairs']} pairs the lexical "
      f"model misses: probe AUC {m['auc']:.3f}, pair accuracy {m['pair_accuracy']:.3f}")
if r.get("cv"):
    print(f"run CV: probe AUC {r['cv']['probe_auc']:.3f}, lexical AUC {r['cv']['lexical_auc']:.3f}")
PYEOF
