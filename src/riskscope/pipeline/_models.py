"""One run per model and a page comparing them: ``run_models(config, ["default", "gemma3-270m"])``.

Each model gets its own run folder ``OUT/<model>/`` (the same dataset, folds, seeds and options), then
``OUT/comparison.json`` and ``OUT/comparison.html`` give, per model, the recipe chosen by nested CV, its CV
AUC and the nested ΔAUC against the lexical model (overall and activation-only).

>>> import riskscope as rs                                                          # doctest: +SKIP
>>> res = run_models(rs.RunConfig(out="runs/compare"), ["default", "gemma3-270m"])  # doctest: +SKIP
>>> res.comparison_html                                                             # doctest: +SKIP
PosixPath('runs/compare/comparison.html')
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import RiskscopeError
from ..report import write_comparison
from ._config import RunConfig
from ._run import RunResult, run

COMPARISON_FILES = frozenset({"comparison.json", "comparison.html"})


@dataclass(frozen=True, eq=False)
class ModelsResult:
    """What :func:`run_models` did."""

    runs: tuple[RunResult, ...]
    """One run per model, in the order given."""
    comparison_json: Path
    """``OUT/comparison.json``."""
    comparison_html: Path
    """``OUT/comparison.html``."""


def model_folder(model: str) -> str:
    """The run folder name of a model spec: its last path part, with characters outside ``[A-Za-z0-9._-]``
    replaced by ``_``.

    >>> model_folder("gemma3-270m"), model_folder("/models/My Model.gguf")
    ('gemma3-270m', 'My_Model.gguf')
    """
    name = Path(str(model).rstrip("/")).name or str(model)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def model_configs(config: RunConfig, models: Sequence[str], out: str | Path | None = None) -> list[RunConfig]:
    """One config per model, each into ``out/<model>`` (default ``out``: ``config.out``); every cheap check runs now, before any model
    loads (distinct folder names, each folder new or a run of the same inputs, an ``OUT`` holding nothing else)."""
    models = [str(m) for m in models]
    if not models:
        raise RiskscopeError("--model: name at least one model")
    names = [model_folder(m) for m in models]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RiskscopeError(f"--model: two models would share the run folder {dup[0]!r}; name each model once")
    out = Path(config.out if out is None else out)
    if out.exists():
        if not out.is_dir():
            raise RiskscopeError(f"{out} exists and is not a directory; use another --out")
        other = sorted(p.name for p in out.iterdir()
                       if p.name not in set(names) | COMPARISON_FILES and not p.name.startswith("."))
        if other:
            raise RiskscopeError(f"{out} holds {', '.join(other[:3])}, which is not a run of these models; use an "
                                 f"empty or new --out")
    return [dataclasses.replace(config, model=m, out=out / n) for m, n in zip(models, names)]


def run_models(config: RunConfig, models: Sequence[str], out: str | Path | None = None, *, load: Callable[[RunConfig], object] | None = None,
               status: Callable[[str], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> ModelsResult:
    """:func:`run` once per model of ``models`` into ``config.out/<model>``, then the comparison page.

    Args:
        config: the options every run shares (its ``model`` and ``out`` are replaced for each model).
        models: model specs for ``load_model``.
        out: the folder of the runs and the comparison (default: ``config.out``).
        load: builds the loaded model of one run's config (default: :func:`run` loads it).
        status, progress: as for :func:`run`; status lines are prefixed with the model.
    """
    out = Path(config.out if out is None else out)
    configs = model_configs(config, models, out)
    say = status or (lambda msg: None)
    results = []
    for cfg in configs:
        lm = load(cfg) if load is not None else None
        results.append(run(cfg, lm, status=lambda msg, m=cfg.model: say(f"{m}: {msg}"), progress=progress))
    js, html = write_comparison(out, [(c.model, c.out) for c in configs])
    return ModelsResult(runs=tuple(results), comparison_json=js, comparison_html=html)


__all__ = ["COMPARISON_FILES", "ModelsResult", "model_configs", "model_folder", "run_models"]
