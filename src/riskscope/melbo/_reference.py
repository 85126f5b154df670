"""The MELBO paper's method written the straightforward way: the yardstick for tests and the benchmark.

One vector at a time, one prompt at a time, the whole model (logits included) run
every step; vector j is kept orthogonal to the *finished* vectors 0..j-1, as in the
seed's notebooks. Same objective, optimiser, projections and renormalisation as the
batched trainer. Not used by ``riskscope melbo`` itself.
"""

from __future__ import annotations

import contextlib
import time
from typing import Sequence

import torch
from torch import Tensor

from ..models import LoadedModel
from ._config import MelboConfig, Positions
from ._engine import add_to_output, melbo_objective
from ._train import TrainResult


@contextlib.contextmanager
def _keep_output(block: torch.nn.Module, box: list) -> None:
    def hook(mod, args, output):
        box.append(output[0] if isinstance(output, tuple) else output)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _target(lm: LoadedModel, ids: Tensor, source: int, target: int, theta: Tensor | None) -> Tensor:
    """Full forward of one prompt (1, T); returns the target block output (T, D), graph intact."""
    box: list = []
    steer = (add_to_output(lm.layout.mlp[source], lambda _i, _o: theta) if theta is not None
             else contextlib.nullcontext())
    with steer, _keep_output(lm.layout.blocks[target], box):
        lm.model(input_ids=ids, use_cache=False)
    return box[0][0].float()


def objective_direct(lm: LoadedModel, ids: Sequence[Sequence[int]], source: int, target: int,
                     positions: Positions, theta_D: Tensor, p: float, q: float) -> float:
    """The objective of one vector computed term by term, one full forward per prompt."""
    total = 0.0
    with torch.no_grad():
        for i, row in enumerate(ids):
            x = torch.tensor([list(row)], device=lm.device)
            z0 = _target(lm, x, source, target, None)
            z = _target(lm, x, source, target, theta_D.to(lm.device))
            inner = sum(float((z[t] - z0[t]).double().norm()) ** p for t in positions.token_indices(len(row), i))
            total += inner ** (1.0 / q)
    return total


def train_reference(lm: LoadedModel, ids: Sequence[Sequence[int]], source: int, target: int, cfg: MelboConfig,
                    radius: float, init_VD: Tensor, steps: int | None = None) -> TrainResult:
    """Train ``len(init_VD)`` vectors sequentially, exactly as the MELBO paper describes."""
    steps = cfg.steps if steps is None else steps
    positions = Positions.parse(cfg.positions)
    device = lm.device
    prompts = [torch.tensor([list(r)], device=device) for r in ids]
    sel = [torch.tensor(positions.token_indices(len(r), i), device=device) for i, r in enumerate(ids)]
    with torch.no_grad():
        z0 = [_target(lm, x, source, target, None)[s] for x, s in zip(prompts, sel)]
    n, D = init_VD.shape
    hard = cfg.ortho == "hard"
    learned = torch.zeros(0, D, device=device)
    curves = torch.zeros(steps, n)
    finals = torch.zeros(n)
    seconds = 0.0

    def away_from_learned(v: Tensor) -> Tensor:
        if not hard or len(learned) == 0:
            return v
        U = learned / radius  # finished vectors are orthogonal, norm R
        return v - (v @ U.T) @ U

    for j in range(n):
        t0 = time.perf_counter()
        with torch.no_grad():
            start = away_from_learned(init_VD[j].to(device, torch.float32))
            theta = (start / start.norm() * radius).requires_grad_(True)
        opt = torch.optim.AdamW([theta], lr=cfg.lr, betas=cfg.betas, weight_decay=0.0, amsgrad=True)
        for step in range(steps):
            opt.zero_grad()
            value = 0.0
            for i, (x, s) in enumerate(zip(prompts, sel)):
                z = _target(lm, x, source, target, theta)[s]
                diff2 = (z - z0[i]).pow(2).sum(-1)[None]
                obj = melbo_objective(diff2, torch.zeros(len(s), dtype=torch.long, device=device), 1, cfg.p, cfg.q)
                (-obj.sum()).backward()
                value += float(obj.detach().sum())
            curves[step, j] = value
            with torch.no_grad():
                g = away_from_learned(theta.grad)
                theta.grad.copy_(g - (g @ theta) * theta / radius ** 2)
            opt.step()
            with torch.no_grad():
                v = away_from_learned(theta)
                theta.copy_(v / v.norm() * radius)
        seconds += time.perf_counter() - t0
        learned = torch.cat([learned, theta.detach()[None]])
        finals[j] = objective_direct(lm, ids, source, target, positions, theta.detach(), cfg.p, cfg.q)
    return TrainResult(kind="vector", radius_V=torch.full((n,), float(radius)), theta_VD=learned.cpu(),
                       curves_SV=curves, objective_V=finals, seconds=seconds, steps=steps)


__all__ = ["objective_direct", "train_reference"]
