"""The configurations of the main job (:class:`RunConfig`) and of ``riskscope probe`` (:class:`ProbeRunConfig`).

Importing this module imports neither torch nor numpy, so the CLI can take its option defaults from these
classes. ``RunConfig`` checks everything cheap when it is built, before any model is loaded: option values,
the dataset (readable, both classes, enough pairs for the folds, the fields the target needs) and the run
folder (empty, new, or a run made from the same inputs).

>>> ProbeRunConfig(folds=3).probe_config().folds
3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping

from ..errors import RiskscopeError
from ._parse import ANALYSES, DEFAULT_READOUTS, parse_hooks, parse_layers, parse_module_paths, parse_positions, parse_readouts

if TYPE_CHECKING:  # pragma: no cover
    from ..data import Dataset
    from ..probes import ProbeConfig

DTYPES = ("float32", "bfloat16", "float16", "auto")
STORE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ProbeRunConfig:
    """How ``riskscope probe`` (and the probe step of :func:`~riskscope.pipeline.run`) trains probes on a store."""

    folds: int = 5
    """Outer cross-validation folds, grouped by pair."""
    penalty: Literal["l2", "l1", "elasticnet"] = "l2"
    """Probe weight penalty."""
    target: Literal["binary", "category", "severity"] = "binary"
    """What to predict: risky vs benign, the category, or the severity of risky texts."""
    hooks: tuple[str, ...] | None = None
    """Restrict to these hooks (default: every hook in the store)."""
    hook: str | None = None
    """Hook of the probe to bundle (default: the best by cross-validated score)."""
    layer: int | None = None
    """Layer of the probe to bundle (default: the best); negative counts from the end."""
    n_bootstrap: int = 1000
    """Bootstrap resamples of pairs for confidence intervals."""
    seed: int = 0
    """Seed for folds, shuffled labels and bootstrap."""
    readouts: tuple[str, ...] | None = None
    """Readouts whose probes compete for the recipe (None: every readout the store holds)."""
    top_k: int = 3
    """Layers averaged in a layer-set candidate (the best ``top_k`` of one readout and hook); < 2: none."""
    stack_lexical: bool = True
    """Let a recipe average the best activation recipe with the lexical TF-IDF model."""

    def __post_init__(self) -> None:
        if self.hooks is not None:
            object.__setattr__(self, "hooks", parse_hooks(self.hooks))
        if self.readouts is not None:
            object.__setattr__(self, "readouts", parse_readouts(self.readouts))
        if self.top_k < 0:
            raise RiskscopeError(f"--top-k must be >= 0, got {self.top_k}")
        self.probe_config()

    def probe_config(self) -> ProbeConfig:
        """The :class:`~riskscope.probes.ProbeConfig` these settings stand for (validated there)."""
        from ..probes import ProbeConfig

        return ProbeConfig(folds=self.folds, penalty=self.penalty, target=self.target,
                           n_bootstrap=self.n_bootstrap, seed=self.seed)


@dataclass(frozen=True)
class RunConfig:
    """Everything the main job does: cache activations, probe every hook point, run the analyses, report.

    Text forms are read on construction (``layers="10-20"``, ``hooks="resid_post,mlp_neurons"``,
    ``positions="0,-1"``, ``module_paths="blocks=model.layers"``) and every check that needs no model runs
    here, so a bad value fails before the slow steps.

    >>> cfg = RunConfig(out="runs/demo", limit=12, layers="20-29", analyses=())   # doctest: +SKIP
    >>> cfg.layers, cfg.hooks                                                      # doctest: +SKIP
    ((20, 21, 22, 23, 24, 25, 26, 27, 28, 29), ('resid_post', 'mlp_neurons'))
    """

    out: str | Path = "runs/default"
    """Run folder: created if new, resumed if it holds a run made from the same inputs, refused otherwise."""
    model: str = "default"
    """Model spec for ``load_model``: default, a named model, a .gguf file, a local HF dir or a cached hub id."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Model dtype."""
    device: str = "cpu"
    """Model device: cpu, cuda, cuda:N or auto."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run."""
    module_paths: Mapping[str, str] | None = None
    """Adapter path overrides for unknown architectures, e.g. ``{"blocks": "model.layers"}``."""
    dataset: str = "cyber_risk_pairs"
    """Built-in dataset name or a .jsonl/.csv file."""
    limit: int | None = None
    """Use only the first N pairs (None: all)."""
    layers: str | tuple[int, ...] = "all"
    """Layers to cache and probe: ``all`` or indices (negative count from the end)."""
    hooks: tuple[str, ...] = ("resid_post", "mlp_neurons")
    """Hook points to cache and probe."""
    positions: str | tuple[int, ...] = "last"
    """One row per text: the ``last`` token, the ``mean`` over tokens, or explicit token indices."""
    readouts: tuple[str, ...] | None = None
    """Readouts cached from the same forward (``last`` plus ``mean``, ``max``, ``span``); None: ``last``,
    ``mean`` and ``span`` (:data:`DEFAULT_READOUTS`) when ``positions`` is ``last``, else just ``positions``."""
    readout_hooks: tuple[str, ...] = ("resid_post",)
    """Hooks whose points get the readouts beyond ``last`` (the others keep ``positions`` only)."""
    store_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Storage dtype of the activations."""
    batch_size: int = 32
    """Texts per forward pass."""
    chunk_rows: int = 256
    """Texts per store chunk (the unit of resumption)."""
    truncate: bool = False
    """Cut texts longer than the model context instead of refusing them."""
    probe: ProbeRunConfig = field(default_factory=ProbeRunConfig)
    """Probe settings (folds, penalty, target, bootstrap, seed)."""
    analyses: tuple[str, ...] = ANALYSES
    """Live-model analyses run after a binary probe (names from :data:`ANALYSES`); empty = none."""
    report: bool = True
    """Write report.html."""

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not isinstance(self.probe, ProbeRunConfig):
            raise RiskscopeError(f"probe must be a ProbeRunConfig, got {type(self.probe).__name__}")
        if not str(self.model).strip():
            raise RiskscopeError("--model: empty model spec")
        if self.dtype not in DTYPES:
            raise RiskscopeError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.store_dtype not in STORE_DTYPES:
            raise RiskscopeError(f"--store-dtype must be one of {', '.join(STORE_DTYPES)}; got {self.store_dtype!r}")
        if self.limit is not None and self.limit < 1:
            raise RiskscopeError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise RiskscopeError(f"--batch-size and --chunk-rows must be >= 1, got {self.batch_size}, {self.chunk_rows}")
        if isinstance(self.layers, str):
            if self.layers.strip() != "all":
                set_(self, "layers", tuple(parse_layers(self.layers, 0)))
        else:
            set_(self, "layers", tuple(int(i) for i in self.layers))
        if not self.layers:
            raise RiskscopeError("--layers: no layer named")
        set_(self, "hooks", parse_hooks(self.hooks))
        positions = parse_positions(self.positions) if isinstance(self.positions, str) else \
            tuple(int(i) for i in self.positions)
        if positions == "all":
            raise RiskscopeError("--positions all keeps every token, but probes need one row per text; use last, "
                                 "mean or token indices")
        set_(self, "positions", positions)
        if self.readouts is None:
            set_(self, "readouts", DEFAULT_READOUTS if positions == "last" else ())
        elif not self.readouts:  # just positions
            set_(self, "readouts", ())
        else:
            set_(self, "readouts", parse_readouts(self.readouts))
            if set(self.readouts) - {"last"} and positions != "last":
                raise RiskscopeError(f"--readouts {','.join(self.readouts)} need --positions last (the 'last' "
                                     f"readout), got {positions!r}")
        set_(self, "readout_hooks", parse_hooks(self.readout_hooks))
        set_(self, "module_paths", parse_module_paths(self.module_paths))
        set_(self, "analyses", _analyses(self.analyses))
        if self.probe.hooks is not None and not set(self.probe.hooks) & set(self.hooks):
            raise RiskscopeError(f"probe hooks {list(self.probe.hooks)} are not among the cached hooks "
                                 f"{list(self.hooks)}")
        if self.probe.hook is not None and self.probe.hook not in self.hooks:
            raise RiskscopeError(f"--hook {self.probe.hook}: not among the cached hooks {list(self.hooks)}")
        data = self.load_data()
        check_dataset(data, self.probe)
        from ._folder import check_run_folder

        check_run_folder(Path(self.out), self.inputs(data))

    def __hash__(self) -> int:  # module_paths is a dict
        return hash(self.to_json_text())

    def load_data(self) -> Dataset:
        """The dataset this run uses (``limit`` applied)."""
        from ..data import load_dataset

        return load_dataset(self.dataset).limit(self.limit)

    def to_dict(self) -> dict:
        """JSON-ready copy of the fields (the ``config`` of the run's manifest)."""
        from dataclasses import asdict

        d = asdict(self)
        d["out"] = str(self.out)
        return d

    def to_json_text(self) -> str:
        import json

        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def inputs(self, data: Dataset) -> dict:
        """What the run's store is made from, as far as it is known before the model is loaded; a run folder
        made from other inputs is refused (:func:`check_run_folder`)."""
        return {"model": self.model, "dtype": self.dtype, "module_paths": dict(self.module_paths) if self.module_paths else None,
                "dataset_digest": data.digest(), "layers": self.layers if isinstance(self.layers, str)
                else list(self.layers), "hooks": list(self.hooks),
                "positions": self.positions if isinstance(self.positions, str) else list(self.positions),
                "store_dtype": self.store_dtype, "batch_size": self.batch_size, "chunk_rows": self.chunk_rows,
                "truncate": self.truncate, "readouts": list(self.readouts), "readout_hooks": list(self.readout_hooks)}


def _analyses(names) -> tuple[str, ...]:
    names = tuple(x.strip() for x in (names.split(",") if isinstance(names, str) else names) if x.strip())
    bad = [x for x in names if x not in ANALYSES]
    if bad:
        raise RiskscopeError(f"unknown analysis {bad[0]!r}; choose from {', '.join(ANALYSES)}")
    return tuple(a for a in ANALYSES if a in names)


def check_dataset(data: Dataset, probe: ProbeRunConfig) -> None:
    """Refuse a dataset the probe step cannot use: one class only, fewer pairs than folds, or no category /
    severity for those targets (the same rule the probe step applies to a store)."""
    from ._targets import targets

    rows = [r.__dict__ for r in data.rows]
    labels = {r["label"] for r in rows}
    if labels != {0, 1}:
        which = "risky" if labels == {1} else "benign" if labels == {0} else str(sorted(labels))
        raise RiskscopeError(f"dataset {data.name}: every row is {which}; probes need risky and benign rows")
    y = targets(rows, probe.target)
    groups = [r["pair_id"] if r["pair_id"] is not None else r["id"] for r in rows]
    if probe.target == "severity":
        groups = [g for g, v in zip(groups, y) if v == v]  # rows with a severity (not NaN)
    elif probe.target == "category" and len(set(y.tolist())) < 2:
        raise RiskscopeError(f"dataset {data.name}: --target category needs at least 2 categories")
    n = len(set(groups))
    if n < probe.folds:
        raise RiskscopeError(f"dataset {data.name}: {n} pairs are fewer than --folds {probe.folds}; use more pairs "
                             f"or fewer folds")


__all__ = ["ProbeRunConfig", "RunConfig", "check_dataset"]
