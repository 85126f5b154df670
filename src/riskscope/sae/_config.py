"""What an SAE is and how it is trained: one frozen dataclass, checked when it is built.

The CLI builds this same object, so the two never drift. Every check a user can fail
lives in ``__post_init__`` and raises :class:`~riskscope.errors.RiskscopeError`.

>>> cfg = SAEConfig(d_in=576, expansion=8, arch="topk", k=32)
>>> cfg.d_sae
4608
>>> SAEConfig(d_in=16, expansion=2, k=32)
Traceback (most recent call last):
...
riskscope.errors.RiskscopeError: k = 32 must be smaller than d_sae = 32 (d_in 16 x expansion 2); lower --k or raise --expansion
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Literal

from ..errors import RiskscopeError

Arch = Literal["relu", "topk", "batchtopk"]
ARCHS = ("relu", "topk", "batchtopk")
Normalize = Literal["expected_average_only_in", "none"]
# fields that change what is learned (a checkpoint of another value cannot be resumed)
_RUN_FIELDS = ("d_in", "expansion", "arch", "k", "l1_coefficient", "lr", "batch_size", "tokens", "seed",
               "normalize", "norm_tokens", "aux_k", "aux_coefficient", "aux_dead_tokens", "decoder_init_norm",
               "threshold_lr", "block_tokens", "adam_betas")


@dataclass(frozen=True)
class SAEConfig:
    """A sparse autoencoder's shape and its training recipe (all sizes in tokens)."""

    d_in: int
    """Width of the activations it reads (``d_model`` for the residual stream)."""
    expansion: float = 8.0
    """Latents per input dimension: ``d_sae = round(d_in * expansion)``; at least 1."""
    arch: Arch = "topk"
    """``relu`` (L1 penalty weighted by decoder norms), ``topk`` (k per token, AuxK loss) or ``batchtopk``
    (k per token on average over a batch, saved as JumpReLU with the estimated threshold)."""
    k: int = 32
    """Active latents per token for ``topk`` / ``batchtopk`` (ignored by ``relu``)."""
    l1_coefficient: float = 5.0
    """Weight of the decoder-norm-weighted L1 penalty (``relu`` only)."""
    lr: float = 3e-4
    """Adam learning rate (constant)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's beta1, beta2."""
    batch_size: int = 4096
    """Tokens per optimiser step."""
    tokens: int = 1_000_000
    """Training tokens (steps = tokens // batch_size)."""
    seed: int = 0
    """Seed of the initial weights and of the order tokens are shuffled in."""
    normalize: Normalize = "expected_average_only_in"
    """``expected_average_only_in``: scale inputs so that E||x|| = sqrt(d_in) (as SAELens does), the factor
    recorded and folded into the saved weights; or ``none``."""
    norm_tokens: int = 65_536
    """Tokens (from the start of the stream) used to estimate the normalisation factor."""
    aux_k: int | None = None
    """Dead latents the AuxK loss uses (``topk``/``batchtopk``); default ``d_in // 2`` (Gao et al. 2024)."""
    aux_coefficient: float = 1 / 32
    """Weight of the AuxK loss (Gao et al. 2024 use 1/32); 0 turns it off."""
    aux_dead_tokens: int = 200_000
    """A latent counts as dead for AuxK after this many tokens without firing."""
    dead_window: int = 1_000_000
    """Dead-latent metric: none fired in the last this many tokens (or in all tokens seen, if fewer)."""
    decoder_init_norm: float = 0.1
    """Initial norm of each decoder row for ``relu`` (Anthropic's April 2024 recipe); TopK kinds use 1."""
    threshold_lr: float = 0.01
    """``batchtopk``: rate of the moving average of the smallest selected activation (the JumpReLU threshold)."""
    block_tokens: int = 65_536
    """Tokens shuffled together before they are cut into batches (one store chunk or live block at most)."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many tokens (0: only at the end of training)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            vals = v if isinstance(v, tuple) else (v,)
            for x in vals:
                if isinstance(x, float) and not math.isfinite(x):
                    raise RiskscopeError(f"SAE config field {f.name} must be a finite number, got {v!r}")
        if self.arch not in ARCHS:
            raise RiskscopeError(f"unknown SAE architecture {self.arch!r}; choose relu, topk or batchtopk")
        if self.normalize not in ("expected_average_only_in", "none"):
            raise RiskscopeError(f"normalize must be expected_average_only_in or none, got {self.normalize!r}")
        if int(self.d_in) != self.d_in or self.d_in < 1:
            raise RiskscopeError(f"d_in must be a positive integer, got {self.d_in!r}")
        if not self.expansion >= 1:
            raise RiskscopeError(f"expansion must be >= 1 (at least as many latents as inputs), got {self.expansion}")
        if self.arch != "relu":
            if self.k < 1:
                raise RiskscopeError(f"k must be >= 1, got {self.k}")
            if self.k >= self.d_sae:
                raise RiskscopeError(f"k = {self.k} must be smaller than d_sae = {self.d_sae} (d_in {self.d_in} x "
                                     f"expansion {self.expansion:g}); lower --k or raise --expansion")
        positive = {"lr": self.lr, "batch_size": self.batch_size, "tokens": self.tokens,
                    "norm_tokens": self.norm_tokens, "aux_dead_tokens": self.aux_dead_tokens,
                    "dead_window": self.dead_window, "decoder_init_norm": self.decoder_init_norm,
                    "block_tokens": self.block_tokens}
        for name, v in positive.items():
            if not v > 0:
                raise RiskscopeError(f"SAE config field {name} must be > 0, got {v}")
        for name, v in {"l1_coefficient": self.l1_coefficient, "aux_coefficient": self.aux_coefficient,
                        "checkpoint_every": self.checkpoint_every}.items():
            if v < 0:
                raise RiskscopeError(f"SAE config field {name} must be >= 0, got {v}")
        if not 0 < self.threshold_lr <= 1:
            raise RiskscopeError(f"threshold_lr must be in (0, 1], got {self.threshold_lr}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise RiskscopeError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.aux_k is not None and self.aux_k < 1:
            raise RiskscopeError(f"aux_k must be >= 1, got {self.aux_k}")
        if self.tokens < self.batch_size:
            raise RiskscopeError(f"tokens ({self.tokens}) must be at least one batch ({self.batch_size})")

    @property
    def d_sae(self) -> int:
        """Number of latents."""
        return int(round(self.d_in * self.expansion))

    @property
    def steps(self) -> int:
        """Optimiser steps."""
        return self.tokens // self.batch_size

    @property
    def aux_k_resolved(self) -> int:
        return min(self.aux_k or max(1, self.d_in // 2), self.d_sae)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        d["d_sae"] = self.d_sae
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SAEConfig":
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "adam_betas" in kw:
            kw["adam_betas"] = tuple(kw["adam_betas"])
        return cls(**kw)

    def run_hash(self) -> str:
        """Hash of the fields that change what is learned (checkpoints of another hash are refused)."""
        d = self.to_dict()
        return hashlib.sha256(json.dumps({k: d[k] for k in _RUN_FIELDS}, sort_keys=True).encode()).hexdigest()[:16]


__all__ = ["ARCHS", "Arch", "Normalize", "SAEConfig"]
