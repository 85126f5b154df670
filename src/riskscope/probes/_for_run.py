"""The one rule for "the run's probe": its saved bundle, else a probe fitted on its store.

>>> probe = probe_for_run("runs/default", Store.open("runs/default/store"))   # doctest: +SKIP
>>> probe.name                                                                 # doctest: +SKIP
'resid_post.20'
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RiskscopeError
from ..hooks import HookPoint
from ._logistic import LogisticProbe
from ._probe import Probe


def fit_probe(store, hook: str, layer: int, C: float = 0.01) -> Probe:
    """A :class:`LogisticProbe` fitted on every row of one point of ``store``, as a :class:`Probe` tied
    to the store's model and weights."""
    point = HookPoint(hook, int(layer))
    X = store.read(point)
    X = X.reshape(len(X), -1) if X.ndim == 3 else X
    est = LogisticProbe(C=C).fit(X, store.labels)
    pos = store.manifest.get("positions", "last")
    model = store.manifest.get("model") or {}
    return Probe(estimator=est, hook=hook, layer=int(layer), positions=pos if isinstance(pos, str) else tuple(pos),
                 model_id=model.get("model"), weight_hash=model.get("weight_hash"),
                 meta={"C": C, "store": str(store.root), "fitted": "all rows"})


def _read_metrics(run: Path) -> dict:
    path = run / "metrics.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RiskscopeError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None
    return data if isinstance(data, dict) else {}


def probe_for_run(run_dir: str | Path, store, metrics: dict | None = None, hook: str | None = None,
                  layer: int | None = None, C: float = 0.01) -> Probe:
    """The probe of a run folder.

    * No ``hook``/``layer`` asked and ``RUN/probe/bundle.json`` exists: that bundle, when it is one probe at
      one point read at the store's own positions (``last`` or ``mean``); the analyses read one point, so a
      recipe bundle (several parts, the lexical model, or the ``max``/``span`` readout) gives way to:
    * Otherwise a :class:`LogisticProbe` (``C``) fitted on all rows of ``store`` at the asked point,
      filling what is not asked from the best point of ``metrics`` (default: ``RUN/metrics.json``)
      when its hook matches, else the layer at 2/3 depth of the store's layers of that hook
      (hook ``resid_post`` when nothing says otherwise).
    """
    run = Path(run_dir)
    if hook is None and layer is None and (run / "probe" / "bundle.json").is_file():
        bundle = Probe.load(run / "probe")
        if not bundle.is_recipe and bundle.readout in (None, "last", "mean"):
            return bundle
    best = (_read_metrics(run) if metrics is None else metrics).get("best") or {}
    hook = hook or best.get("hook") or "resid_post"
    have = sorted(p.layer for p in store.points if p.hook == hook)
    if not have:
        raise RiskscopeError(f"{store.root} holds no {hook} points to fit a probe on")
    if layer is None:
        layer = int(best["layer"]) if best.get("hook", hook) == hook and "layer" in best else have[(2 * len(have)) // 3]
    if layer not in have:
        raise RiskscopeError(f"{store.root} has no {hook} at layer {layer}; it holds {have}")
    return fit_probe(store, hook, layer, C)


__all__ = ["fit_probe", "probe_for_run"]
