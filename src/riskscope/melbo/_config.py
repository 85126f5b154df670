"""What a MELBO run is: one frozen dataclass for training, one for evaluation.

The CLI builds these same objects, so the two never drift; every check a user
can fail lives in ``__post_init__`` (or :meth:`MelboConfig.resolve`, for the
checks that need the model) and raises :class:`~riskscope.errors.RiskscopeError`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Literal, Union

from ..errors import RiskscopeError

Orthogonal = Literal["hard", "soft", "none"]
Embedder = Literal["minilm", "ngram"]
# The relative radius grid: multiples of the median norm of the residual stream leaving the
# source layer (over the prompt tokens); SmolLM2's is ~130, so 0.02..0.4 covers 2.6..52.
RELATIVE_GRID = (0.02, 0.05, 0.1, 0.2, 0.4)


def _is_real(x) -> bool:
    """A real number, not a bool (``True`` is an int to Python, never a sensible setting here)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _integer(name: str, value, lo: int | None = None, why: str = "") -> None:
    """``value`` must be an integer (>= ``lo``)."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool)) or (lo is not None and value < lo):
        bound = f" >= {lo}" if lo is not None else ""
        raise RiskscopeError(f"{name} must be an integer{bound}{why}, got {value!r}")


def _real(name: str, value, lo: float | None = None, above: float | None = None, hi: float | None = None) -> None:
    """``value`` must be a finite number, >= ``lo`` / > ``above`` / <= ``hi``."""
    ok = _is_real(value) and math.isfinite(value)
    ok = ok and (lo is None or value >= lo) and (above is None or value > above) and (hi is None or value <= hi)
    if not ok:
        if lo is not None and hi is not None:
            want = f"in [{lo:g}, {hi:g}]"
        elif above is not None:
            want = f"a finite number > {above:g}"
        else:
            want = f"a finite number >= {lo:g}"
        raise RiskscopeError(f"{name} must be {want}, got {value!r}")


@dataclass(frozen=True)
class Positions:
    """Which prompt tokens the objective compares: ``all``, ``last:K``, or indices like ``0,-1``."""

    kind: Literal["all", "last", "index"]
    """``all`` real tokens, the ``last`` K tokens, or explicit ``index`` positions."""
    count: int = 0
    """K for ``last:K``."""
    index: tuple[int, ...] = ()
    """Explicit token indices into each prompt (negative count from the end)."""

    @classmethod
    def parse(cls, text: str | "Positions") -> "Positions":
        if isinstance(text, Positions):
            return text
        text = str(text).strip()
        if text == "all":
            return cls("all")
        if text.startswith("last"):
            _, _, k = text.partition(":")
            try:
                count = int(k) if k else 1
            except ValueError:
                count = -1
            if count < 1:
                raise RiskscopeError(f"--positions {text!r}: use last:K with K >= 1 (e.g. last:2)")
            return cls("last", count=count)
        try:
            index = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            index = ()
        if not index:
            raise RiskscopeError(f"--positions must be all, last:K or token indices like 0,-1; got {text!r}")
        return cls("index", index=index)

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "last":
            return f"last:{self.count}"
        return ",".join(str(i) for i in self.index)

    def token_indices(self, length: int, prompt_no: int = 0) -> list[int]:
        """Absolute indices into a prompt of ``length`` tokens, or a clear error."""
        if self.kind == "all":
            return list(range(length))
        if self.kind == "last":
            if self.count > length:
                raise RiskscopeError(f"positions last:{self.count} fall outside prompt {prompt_no}, which has "
                                     f"only {length} tokens")
            return list(range(length - self.count, length))
        out = []
        for i in self.index:
            j = i if i >= 0 else length + i
            if not 0 <= j < length:
                raise RiskscopeError(f"position {i} falls outside prompt {prompt_no}, which has {length} tokens "
                                     f"(valid: 0..{length - 1} or -1..-{length})")
            out.append(j)
        return sorted(set(out))


@dataclass(frozen=True)
class MelboConfig:
    """How to train MELBO steering vectors (or adapters): the MELBO paper's method, batched.

    >>> MelboConfig(radius=8.0, n_vectors=4, steps=10).radius
    8.0
    """

    n_vectors: int = 32
    """How many vectors (or adapters) to learn, each from its own random start."""
    radius: Union[float, Literal["auto"]] = "auto"
    """R, the norm of every vector (the adapter scale); ``auto`` sweeps ``radius_grid`` first."""
    source: int | None = None
    """Layer whose MLP output gets the vector as a bias; None = min(8, n_layers // 3): the MELBO paper's 8 on
    every model of 24 layers or more, proportionally earlier on shallower ones."""
    target: int | None = None
    """Layer whose output (resid_post) is compared with the unsteered run; None = n_layers - 8."""
    p: float = 2.0
    """Exponent on each token's distance: 2 weighs tokens evenly, 4 rewards spiky changes."""
    q: float = 1.0
    """Per-prompt root: objective = sum_i (sum_t ||dZ_it||^p)^(1/q); the MELBO paper uses q = 1 or q = p."""
    positions: str = "last:2"
    """Prompt tokens the objective compares: ``all``, ``last:K`` or indices like ``0,-1``."""
    orthogonal: Orthogonal | None = None
    """``hard`` (Gram-Schmidt in vector order each step), ``soft`` (cosine penalty) or ``none``;
    None = hard for vectors, none for adapters."""
    soft_weight: float = 1.0
    """Weight of the soft-orthogonality penalty, relative to the mean objective at the start."""
    steps: int = 300
    """Optimiser steps per vector."""
    lr: float = 1e-3
    """AdamW learning rate (the MELBO paper's 1e-3; betas and AMSGrad as in the MELBO paper)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas."""
    adapter_rank: int = 0
    """0 learns steering vectors; r > 0 learns rank-r adapters R * B A^T of the source MLP output weights."""
    seed: int = 0
    """Seed of the random starts (a private generator: the global RNG is never touched)."""
    vector_batch: int | None = None
    """Vectors per forward pass; None picks a size from ``token_budget``."""
    token_budget: int = 4096
    """With ``vector_batch=None``: about this many tokens (vectors x prompts x length) per forward."""
    mixed_precision: bool = False
    """Run the steered layers under bfloat16 autocast (for GPUs; slower on most CPUs)."""
    share_prefix: bool = True
    """Run the prompts' shared prefix (e.g. the chat template) once per vector through the KV cache (exact)."""
    chat: bool = True
    """Wrap each prompt in the model's chat template (user turn + generation prompt)."""
    radius_grid: tuple[float, ...] = RELATIVE_GRID
    """Radii tried by ``radius="auto"`` (see ``grid_relative``)."""
    grid_relative: bool = True
    """Grid values are multiples of the median residual norm at the source layer (else absolute)."""
    sweep_vectors: int = 4
    """Vectors trained per grid radius during the sweep (all radii train together in one batch)."""
    sweep_steps: int | None = None
    """Steps for the sweep; None = ``steps`` // 3."""
    grid_extend: int = 2
    """While the best radius is the top of the grid, try up to this many larger ones, each the last
    times the grid's last ratio (0.2, 0.4 -> 0.8, 1.6); 0 keeps the grid as given."""

    def __post_init__(self) -> None:
        _integer("--vectors", self.n_vectors, 1)
        if isinstance(self.radius, str):
            if self.radius != "auto":
                raise RiskscopeError(f"--radius must be a positive number or 'auto', got {self.radius!r}")
        elif not (_is_real(self.radius) and math.isfinite(self.radius) and self.radius > 0):
            raise RiskscopeError(f"--radius must be > 0 (or 'auto'), got {self.radius}")
        else:
            object.__setattr__(self, "radius", float(self.radius))
        for flag, layer in (("--source", self.source), ("--target", self.target)):
            if layer is not None:
                _integer(flag, layer)
        if not (_is_real(self.p) and math.isfinite(self.p) and 1 <= self.p <= 16):
            raise RiskscopeError(f"--p must be in [1, 16] (the MELBO paper uses 2 or 4), got {self.p}")
        if not (_is_real(self.q) and math.isfinite(self.q) and 1 <= self.q <= self.p):
            raise RiskscopeError(f"--q must be in [1, p] = [1, {self.p:g}] (the MELBO paper uses 1 or p), got {self.q}")
        if self.orthogonal not in (None, "hard", "soft", "none"):
            raise RiskscopeError(f"--orthogonal must be hard, soft or none, got {self.orthogonal!r}")
        _integer("--adapter rank", self.adapter_rank, 0)
        _real("soft_weight", self.soft_weight, lo=0)
        _integer("--steps", self.steps, 1)
        _real("--lr", self.lr, above=0)
        if (not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2
                or not all(_is_real(b) and math.isfinite(b) and 0 <= b < 1 for b in self.betas)):
            raise RiskscopeError(f"betas must be two numbers in [0, 1), got {self.betas}")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        _integer("--seed", self.seed)
        if self.vector_batch is not None:
            _integer("--vector-batch", self.vector_batch, 1)
        _integer("token_budget", self.token_budget, 1)
        for name in ("mixed_precision", "share_prefix", "chat", "grid_relative"):
            if not isinstance(getattr(self, name), bool):
                raise RiskscopeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        grid = tuple(self.radius_grid) if isinstance(self.radius_grid, (tuple, list)) else ()
        if not grid or any(not (_is_real(r) and math.isfinite(r) and r > 0) for r in grid):
            raise RiskscopeError(f"--radius-grid needs positive finite numbers, got {self.radius_grid}")
        object.__setattr__(self, "radius_grid", tuple(sorted({float(r) for r in grid})))
        _integer("--sweep-vectors", self.sweep_vectors, 2, why=" (diversity needs pairs)")
        _integer("--grid-extend", self.grid_extend, 0)
        if self.sweep_steps is not None:
            _integer("--sweep-steps", self.sweep_steps, 1)
        Positions.parse(self.positions)  # fail early on a malformed spec

    # --- derived -----------------------------------------------------------------------------------
    @property
    def ortho(self) -> Orthogonal:
        """The orthogonality mode actually used."""
        if self.orthogonal is not None:
            return self.orthogonal
        return "none" if self.adapter_rank else "hard"

    @property
    def kind(self) -> str:
        return f"adapter(rank={self.adapter_rank})" if self.adapter_rank else "vector"

    def layers(self, n_layers: int) -> tuple[int, int]:
        """(source, target) as absolute layer indices, checked against a model of ``n_layers``."""
        def norm(i: int, what: str) -> int:
            j = i if i >= 0 else n_layers + i
            if not 0 <= j < n_layers:
                raise RiskscopeError(f"--{what} {i} does not exist: the model has {n_layers} layers "
                                     f"(0..{n_layers - 1}, or -1..-{n_layers})")
            return j

        source = norm(self.source, "source") if self.source is not None else min(8, n_layers // 3)
        if self.target is not None:
            target = norm(self.target, "target")
        else:
            target = min(n_layers - 1, max(source + 1, n_layers - 8))
        if source >= target:
            raise RiskscopeError(f"--source ({source}) must be below --target ({target}): the objective "
                                 f"compares a later layer's activations (the model has {n_layers} layers)")
        return source, target

    def check_model(self, n_layers: int, d_model: int, d_mlp: int) -> tuple[int, int]:
        """The model-dependent checks; returns (source, target)."""
        st = self.layers(n_layers)
        if self.ortho == "hard" and not self.adapter_rank and self.n_vectors > d_model:
            raise RiskscopeError(f"cannot make {self.n_vectors} mutually orthogonal vectors in d_model = {d_model} "
                                 f"dimensions; use --vectors <= {d_model} or --orthogonal soft/none")
        if self.ortho == "hard" and self.adapter_rank and self.n_vectors * self.adapter_rank > d_model:
            raise RiskscopeError(f"cannot make {self.n_vectors} rank-{self.adapter_rank} adapters with mutually "
                                 f"orthogonal output factors in d_model = {d_model} dimensions; use --vectors x "
                                 f"--adapter <= {d_model} or --orthogonal soft/none")
        if self.adapter_rank > min(d_model, d_mlp):
            raise RiskscopeError(f"--adapter rank {self.adapter_rank} exceeds min(d_model, d_mlp) = "
                                 f"{min(d_model, d_mlp)}")
        return st

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MelboConfig":
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("betas", "radius_grid"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class EvalConfig:
    """How learned vectors are judged: completions, baselines, diversity, fluency, clusters."""

    max_new_tokens: int = 48
    """Tokens generated per completion."""
    samples: int = 0
    """Sampled completions per vector and prompt, besides the greedy one."""
    temperature: float = 0.8
    """Temperature of the sampled completions."""
    n_random: int | None = None
    """Random vectors of norm R used as the control; None = as many as learned vectors."""
    embedder: Embedder = "minilm"
    """Sentence embeddings: ``minilm`` (all-MiniLM-L6-v2, the ``melbo`` extra) or ``ngram`` (hashed
    character trigrams: no model, for tests and quick looks)."""
    max_clusters: int = 8
    """Most behaviour clusters shown (k is picked by silhouette score up to this)."""
    fluency_margin: float = 2.5
    """A completion is fluent when its mean token log-likelihood (unsteered model) is at most this
    many nats below the unsteered completion's."""
    min_distinct: float = 0.6
    """A completion is fluent only if its share of distinct token trigrams is at least this (or the
    unsteered completion's, if lower): loops are likely under the model but are not fluent text."""
    eval_prompts: tuple[str, ...] = ()
    """Held-out prompts the vectors are also run on (generalisation)."""
    generation_batch: int = 64
    """Sequences per generate() call."""

    def __post_init__(self) -> None:
        _integer("--max-new-tokens", self.max_new_tokens, 1)
        _integer("--samples", self.samples, 0)
        _real("--temperature", self.temperature, above=0)
        if self.n_random is not None:
            _integer("--random", self.n_random, 0)
        if self.embedder not in ("minilm", "ngram"):
            raise RiskscopeError(f"--embedder must be minilm or ngram, got {self.embedder!r}")
        _integer("--max-clusters", self.max_clusters, 1)
        _real("fluency_margin", self.fluency_margin, lo=0)
        _real("min_distinct", self.min_distinct, lo=0, hi=1)
        _integer("generation_batch", self.generation_batch, 1)
        prompts = tuple(str(p) for p in self.eval_prompts)
        if any(not p.strip() for p in prompts):
            raise RiskscopeError("--eval-prompts contains an empty prompt")
        object.__setattr__(self, "eval_prompts", prompts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EvalConfig":
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        if "eval_prompts" in kwargs:
            kwargs["eval_prompts"] = tuple(kwargs["eval_prompts"])
        return cls(**kwargs)


__all__ = ["EvalConfig", "MelboConfig", "Positions", "RELATIVE_GRID"]
