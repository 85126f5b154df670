"""Training loop: blocks -> seeded shuffle -> batches -> Adam, with resumable checkpoints.

A checkpoint is written at a block boundary as ``CKPT/step-NNNNNNNN/`` (``state.json`` plus
``tensors.safetensors``: weights, Adam moments, firing counters and the tokens left over from
the last block), then ``CKPT/latest.json`` is switched to it atomically and older ones are
removed. Resuming reads the same blocks in the same order, so a resumed run ends with the
weights an uninterrupted run ends with. No pickle, no ``torch.save``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import torch
from safetensors.torch import load_file
from torch import Tensor

from .._io import atomic_json, save_safetensors
from ..errors import RiskscopeError
from ._config import SAEConfig
from ._model import SparseAutoencoder

CKPT_FORMAT = "riskscope-sae-checkpoint/1"


class Source(Protocol):
    d_in: int

    def blocks(self, start: int = 0) -> Iterator[tuple[int, Tensor]]: ...


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback sees after each step."""

    step: int
    steps: int
    tokens: int
    l0: float
    fvu: float
    mse: float
    aux: float
    dead_fraction: float
    """Fraction of latents dead by the AuxK window."""


@dataclass
class TrainResult:
    """A trained SAE (reading raw activations: the normalisation factor is folded in) and how it went."""

    sae: SparseAutoencoder
    scale: float
    """Normalisation factor: the SAE was trained on ``scale * x`` (E||scale * x|| = sqrt(d_in))."""
    mean_D: Tensor
    """Mean raw activation over the training tokens (for mean-ablation)."""
    tokens: int
    steps: int
    seconds: float
    """Wall seconds of this call (a resumed run counts only its own part)."""
    dead_F: Tensor
    """Latents that fired on none of the last ``dead_window`` training tokens (all tokens, if fewer)."""
    density_F: Tensor
    """Fraction of training tokens each latent fired on."""
    history: list[dict] = field(default_factory=list)
    resumed_from_step: int | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_this_run / self.seconds if self.seconds > 0 else float("nan")

    tokens_this_run: int = 0
    cpu_seconds: float = 0.0
    """CPU seconds of this call, all threads of the process together."""
    source_seconds: float = 0.0
    """Wall seconds of this call spent getting activation blocks (running the model, or reading the store)."""
    source_cpu_seconds: float = 0.0
    """CPU seconds of the same."""


def _block_seed(seed: int, block: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{block}".encode()).digest()[:8], "little") >> 1


class _State:
    """Everything a checkpoint holds besides the model and optimizer."""

    def __init__(self, cfg: SAEConfig):
        f = cfg.d_sae
        self.step = 0
        self.tokens = 0
        self.next_block = 0
        self.scale: float | None = None
        self.threshold = 0.0
        self.leftover = torch.empty(0, cfg.d_in)
        self.last_fired = torch.full((f,), -1, dtype=torch.int64)
        self.fire_count = torch.zeros(f, dtype=torch.int64)
        self.act_sum = torch.zeros(cfg.d_in, dtype=torch.float64)
        self.history: list[dict] = []


def _save_checkpoint(root: Path, cfg: SAEConfig, sae: SparseAutoencoder, opt: torch.optim.Adam, st: _State,
                     extra: dict) -> None:
    name = f"step-{st.step:08d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"sae.{k}": v.detach().contiguous() for k, v in sae.state_dict().items()}
    params = list(sae.parameters())
    steps = {}
    for i, p in enumerate(params):
        s = opt.state.get(p, {})
        if s:
            tensors[f"adam.{i}.exp_avg"] = s["exp_avg"].contiguous()
            tensors[f"adam.{i}.exp_avg_sq"] = s["exp_avg_sq"].contiguous()
            steps[i] = float(s["step"])
    tensors.update(leftover=st.leftover.contiguous(), last_fired=st.last_fired, fire_count=st.fire_count,
                   act_sum=st.act_sum)
    save_safetensors(tensors, tmp / "tensors.safetensors", fsync=True)
    state = {"format": CKPT_FORMAT, "run_hash": cfg.run_hash(), "config": cfg.to_dict(), "step": st.step,
             "tokens": st.tokens, "next_block": st.next_block, "scale": st.scale, "threshold": st.threshold,
             "adam_steps": steps, "history": st.history, **extra}
    atomic_json(tmp / "state.json", state)
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_json(root / "latest.json", {"format": CKPT_FORMAT, "dir": name})
    for old in root.glob("step-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint directory ``latest.json`` points to, or None."""
    ptr = root / "latest.json"
    if not ptr.is_file():
        return None
    try:
        d = json.loads(ptr.read_text())
    except ValueError:
        raise RiskscopeError(f"{ptr}: not valid JSON; delete the checkpoint folder to start over") from None
    path = root / str(d.get("dir", ""))
    return path if (path / "state.json").is_file() else None


def _load_checkpoint(path: Path, cfg: SAEConfig, sae: SparseAutoencoder, opt: torch.optim.Adam, st: _State,
                     source_id: str) -> None:
    state = json.loads((path / "state.json").read_text())
    if state.get("run_hash") != cfg.run_hash() or state.get("source_id") != source_id:
        raise RiskscopeError(f"{path} is a checkpoint of another configuration or data source; use another --out "
                             f"or start over with --no-resume")
    try:
        t = load_file(str(path / "tensors.safetensors"))
    except Exception as e:
        raise RiskscopeError(f"{path}/tensors.safetensors is corrupt ({type(e).__name__}); start over with "
                             f"--no-resume") from None
    sae.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("sae.")})
    params = list(sae.parameters())
    osd = opt.state_dict()
    for i, _ in enumerate(params):
        if f"adam.{i}.exp_avg" in t:
            osd["state"][i] = {"step": torch.tensor(state["adam_steps"][str(i)]),
                               "exp_avg": t[f"adam.{i}.exp_avg"], "exp_avg_sq": t[f"adam.{i}.exp_avg_sq"]}
    opt.load_state_dict(osd)
    st.step, st.tokens, st.next_block = state["step"], state["tokens"], state["next_block"]
    st.scale, st.threshold, st.history = state["scale"], state["threshold"], state["history"]
    st.leftover, st.last_fired, st.fire_count, st.act_sum = t["leftover"], t["last_fired"], t["fire_count"], \
        t["act_sum"]


def train_sae_on(source: Source, cfg: SAEConfig, checkpoint_dir: str | Path | None = None, resume: bool = True,
                 progress: Callable[[TrainProgress], None] | None = None, source_id: str = "") -> TrainResult:
    """Train an SAE with ``cfg`` on the activation blocks of ``source``.

    ``checkpoint_dir``: where checkpoints go (``cfg.checkpoint_every`` tokens apart, and one at the
    end); with ``resume`` an existing checkpoint of the same config and ``source_id`` is continued.
    """
    if source.d_in != cfg.d_in:
        raise RiskscopeError(f"the activations are {source.d_in} wide but the SAE config says d_in = {cfg.d_in}")
    t0, c0 = time.perf_counter(), time.process_time()
    source_wall = source_cpu = 0.0
    sae = SparseAutoencoder(cfg.d_in, cfg.d_sae, cfg.arch, cfg.k, seed=cfg.seed,
                            decoder_norm=cfg.decoder_init_norm if cfg.arch == "relu" else 1.0)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.adam_betas)
    st = _State(cfg)
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    resumed = None
    if root is not None and resume and (ck := latest_checkpoint(root)) is not None:
        _load_checkpoint(ck, cfg, sae, opt, st, source_id)
        resumed = st.step
    start_tokens = st.tokens
    steps, B = cfg.steps, cfg.batch_size
    aux_k = cfg.aux_k_resolved
    every = max(1, steps // 200)
    next_ckpt = (st.tokens // cfg.checkpoint_every + 1) * cfg.checkpoint_every if cfg.checkpoint_every else None
    blocks = source.blocks(st.next_block)
    while st.step < steps:
        s0, sc0 = time.perf_counter(), time.process_time()
        g, raw = next(blocks)
        source_wall += time.perf_counter() - s0
        source_cpu += time.process_time() - sc0
        if raw.shape[0] == 0:
            st.next_block = g + 1
            continue
        if st.scale is None:
            head = raw[:cfg.norm_tokens]
            mean_norm = float(head.norm(dim=1).mean())
            if not math.isfinite(mean_norm) or mean_norm <= 0:
                raise RiskscopeError("the activations are all zero or not finite; nothing to train on")
            st.scale = math.sqrt(cfg.d_in) / mean_norm if cfg.normalize == "expected_average_only_in" else 1.0
            with torch.no_grad():
                sae.b_dec.copy_((head * st.scale).mean(0))
        perm = torch.randperm(raw.shape[0], generator=torch.Generator().manual_seed(_block_seed(cfg.seed, g)))
        buf = torch.cat([st.leftover, raw[perm] * st.scale])
        del raw, perm
        pos = 0
        while pos + B <= buf.shape[0] and st.step < steps:
            x = buf[pos:pos + B]
            pos += B
            dead = (st.tokens - st.last_fired) > cfg.aux_dead_tokens
            dead &= st.tokens >= cfg.aux_dead_tokens
            out = sae.train_step(x, cfg.l1_coefficient, dead, aux_k, cfg.aux_coefficient)
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            sae.project_decoder_grad()
            opt.step()
            sae.normalize_decoder()
            st.step += 1
            st.tokens += B
            st.last_fired[out.counts_F > 0] = st.tokens
            st.fire_count += out.counts_F
            st.act_sum += x.sum(0, dtype=torch.float64) / st.scale
            if cfg.arch == "batchtopk" and math.isfinite(out.min_selected):
                st.threshold = out.min_selected if st.step == 1 else \
                    (1 - cfg.threshold_lr) * st.threshold + cfg.threshold_lr * out.min_selected
            dead_frac = float(dead.float().mean())
            if st.step % every == 0 or st.step == steps:
                st.history.append({"step": st.step, "tokens": st.tokens, "l0": round(out.l0, 4),
                                   "fvu": round(out.fvu, 6), "mse": round(float(out.mse), 6),
                                   "aux": round(float(out.aux), 6), "dead_fraction_aux": round(dead_frac, 6)})
            if progress:
                progress(TrainProgress(st.step, steps, st.tokens, out.l0, out.fvu, float(out.mse), float(out.aux),
                                       dead_frac))
        st.leftover = buf[pos:].clone()
        st.next_block = g + 1
        del buf
        if root is not None and next_ckpt is not None and st.tokens >= next_ckpt and st.step < steps:
            _save_checkpoint(root, cfg, sae, opt, st, {"source_id": source_id})
            next_ckpt = (st.tokens // cfg.checkpoint_every + 1) * cfg.checkpoint_every
    if root is not None:
        _save_checkpoint(root, cfg, sae, opt, st, {"source_id": source_id})
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    final = SparseAutoencoder(cfg.d_in, cfg.d_sae, cfg.arch, cfg.k)
    final.load_state_dict(sae.state_dict())
    if cfg.arch == "batchtopk":
        final.threshold.fill_(st.threshold)
    final.fold_input_scale(st.scale)
    final.requires_grad_(False)
    window = min(cfg.dead_window, st.tokens)
    return TrainResult(sae=final, scale=float(st.scale), mean_D=(st.act_sum / max(st.tokens, 1)).float(),
                       tokens=st.tokens, steps=st.step, seconds=seconds,
                       dead_F=st.last_fired <= st.tokens - window,
                       density_F=st.fire_count.double() / max(st.tokens, 1), history=st.history,
                       resumed_from_step=resumed, tokens_this_run=st.tokens - start_tokens, cpu_seconds=cpu,
                       source_seconds=source_wall, source_cpu_seconds=source_cpu)


__all__ = ["CKPT_FORMAT", "TrainProgress", "TrainResult", "latest_checkpoint", "train_sae_on"]
