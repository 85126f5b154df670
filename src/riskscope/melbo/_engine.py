"""The fast forward: only the layers between source and target, many perturbations per batch.

Everything before the source layer does not depend on the perturbation, so it is
run once. During that run a :class:`~riskscope.hooks.BlockReplay` records the exact
``(args, kwargs)`` each block from the source to the target receives (attention masks,
rotary embeddings, position ids: whatever the family passes). A training step then
re-runs those same block modules on ``cached input + perturbation``, one batch row per
(vector, prompt) pair, and stops after the target block. Layers after the target,
the final norm and the unembedding never run. This is family-agnostic: it relies
only on each block being called as ``block(hidden_states, ...)``.

When adding ``delta`` to the source MLP output just adds ``delta`` to the block
output (every family except Gemma, whose post-MLP norm sits in between; checked
numerically, not assumed), the source block is skipped too and the cached block
output is used directly.

Prompts that share a prefix (every chat prompt starts with the same template) are run
prefix-first: with causal attention, a vector's steered activations on the shared prefix
do not depend on the prompt, so the prefix runs once per vector (batch C) and fills the
model's own KV cache, which is then repeated for each prompt while the suffixes run
(batch C*P). Exact; checked numerically against the plain path at setup, which is used
instead if they disagree.

The target block itself is needed only where the objective looks (``last:2``: 2 tokens per
prompt) plus every token's keys and values; for pre-norm rotary blocks (Llama-style, as the
family's adapter says) :class:`~riskscope.melbo._rows.RowTarget` computes just that, checked
against the block at setup (``rows_note``).

Batch rows are vector-major: row ``c * P + i`` holds vector ``c`` on prompt ``i``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..errors import ModelError, RiskscopeError
from ..hooks import BlockReplay, HookPoint, capture, pad_batch, position_ids_for, run_batch, tokenize
from ..models import LoadedModel
from ._config import Positions
from ._rows import RowTarget, rotary_tables


# --- prompts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedPrompts:
    """Prompts as given, as fed to the model (chat template applied or not), and their token ids."""

    texts: tuple[str, ...]
    formatted: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.texts)


def format_prompts(lm: LoadedModel, prompts: Sequence[str], chat: bool) -> tuple[str, ...]:
    """Apply the model's chat template (one user turn + generation prompt) unless ``chat`` is False."""
    if not chat:
        return tuple(prompts)
    tok = lm.tokenizer
    if not getattr(tok, "chat_template", None) or not hasattr(tok, "apply_chat_template"):
        raise RiskscopeError(f"model {lm.model_id} has no chat template; pass --raw (chat=False) to use the "
                             f"prompts as plain text")
    return tuple(tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True) for p in prompts)


def encode_prompts(lm: LoadedModel, prompts: Sequence[str], chat: bool, what: str = "prompt") -> EncodedPrompts:
    """Check, format and tokenise prompts (templated text gets no extra special tokens)."""
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise RiskscopeError(f"no {what}s given: pass --prompt TEXT or --prompts FILE")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise RiskscopeError(f"{what} {i} is empty")
    formatted = format_prompts(lm, prompts, chat)
    if chat:
        ids = [list(x) for x in lm.tokenizer(list(formatted), add_special_tokens=False)["input_ids"]]
    else:
        ids = tokenize(lm, formatted)
    for i, row in enumerate(ids):
        if not row:
            raise RiskscopeError(f"{what} {i} has no tokens")
        if len(row) > lm.context_length:
            raise RiskscopeError(f"{what} {i} has {len(row)} tokens, more than the model's context "
                                 f"({lm.context_length})")
    return EncodedPrompts(tuple(prompts), formatted, tuple(tuple(r) for r in ids))


# --- perturbing the source MLP output (scoped) -----------------------------------------------------------


@contextlib.contextmanager
def add_to_output(module: torch.nn.Module, delta_fn: Callable[[Tensor, Tensor], Tensor]) -> Iterator[None]:
    """Add ``delta_fn(input, output)`` to ``module``'s (first) output inside the block only."""

    def hook(mod, args, output):
        first = output[0] if isinstance(output, tuple) else output
        new = first + delta_fn(args[0] if args else None, first).to(first.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# --- the objective -----------------------------------------------------------------------------------------


def _safe_pow(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` for x >= 0 with a zero (not NaN) gradient at x == 0."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)) ** exponent, torch.zeros_like(x))


def melbo_objective(diff2_CN: Tensor, prompt_of_N: Tensor, n_prompts: int, p: float, q: float) -> Tensor:
    """sum_i (sum_{t in I_i} ||dZ_it||^p)^(1/q) per vector, from squared distances (C, N) of the
    N selected (prompt, token) pairs, ``prompt_of_N`` naming each pair's prompt. Returns (C,)."""
    per_token = _safe_pow(diff2_CN, p / 2)
    per_prompt = torch.zeros(diff2_CN.shape[0], n_prompts, dtype=per_token.dtype, device=per_token.device)
    per_prompt = per_prompt.index_add(1, prompt_of_N, per_token)  # (C, P)
    return _safe_pow(per_prompt, 1.0 / q).sum(1)


# --- the slice ----------------------------------------------------------------------------------------------


class SteeredSlice:
    """Blocks ``source..target`` of ``lm``, replayed on cached inputs with a perturbation of the
    source layer's MLP output. Built once per (model, prompts, layers); cheap to call many times."""

    def __init__(self, lm: LoadedModel, ids: Sequence[Sequence[int]], source: int, target: int,
                 positions: Positions, mixed_precision: bool = False, share_prefix: bool = True,
                 target_rows: bool = True) -> None:
        if not 0 <= source < target < lm.n_layers:
            raise RiskscopeError(f"need 0 <= source < target < {lm.n_layers}, got source={source}, target={target}")
        self.lm, self.source, self.target = lm, source, target
        self.n_prompts = len(ids)
        self.lengths = [len(r) for r in ids]
        self.mixed_precision = mixed_precision
        pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        self.input_ids, self.mask = pad_batch(ids, pad, "right", lm.device)  # (P, T)
        pairs = [(i, t) for i, n in enumerate(self.lengths) for t in positions.token_indices(n, i)]
        self.sel_prompt = torch.tensor([i for i, _ in pairs], device=lm.device)  # (N,)
        self.sel_token = torch.tensor([t for _, t in pairs], device=lm.device)   # (N,)
        points = [HookPoint("resid_post", source), HookPoint("resid_post", target),
                  HookPoint("mlp_neurons", source)]
        with torch.no_grad(), capture(lm, points, reduce="all", stop=True) as got:
            run_batch(lm, self.input_ids, self.mask)
        self.h_src_PTD = got[points[0]]              # unsteered block-source output (model dtype)
        self.z0_PTD = got[points[1]].float()         # unsteered target activations
        self.neurons_PTF = got[points[2]]            # source MLP neurons (adapters read these)
        self._replays: dict[int, BlockReplay] = {}
        self._prefixed: dict[int, tuple] = {}
        self.additive = self._check_additive()
        self.prefix_len = 0
        self.prefix_note = "off"
        if share_prefix:
            self.prefix_len, self.prefix_note = self._check_prefix(ids)
        self._rows: RowTarget | None = None
        self._rows, self.rows_note = self._check_rows() if target_rows else (None, "off")

    # --- cached block inputs, one set per batch size -------------------------------------------------
    def _replay(self, n_vectors: int) -> BlockReplay:
        if n_vectors not in self._replays:
            if len(self._replays) > 4:  # odd chunk sizes from callers: keep memory bounded
                self._replays.clear()
            self._replays[n_vectors] = self._record_inputs(n_vectors)
        return self._replays[n_vectors]

    def _record_inputs(self, n_vectors: int) -> BlockReplay:
        """Run the unsteered model on ``n_vectors`` copies of the prompts up to the target block and
        record what each block source..target is called with (so batch shapes match exactly)."""
        return BlockReplay.record(self.lm, self.input_ids.repeat(n_vectors, 1), self.mask.repeat(n_vectors, 1),
                                  self.source, self.target)

    def _check_additive(self) -> bool:
        """True when a delta on the source MLP output reaches the block output unchanged."""
        rec = self._replay(1)
        hidden = rec.hidden_in(self.source)
        gen = torch.Generator(device="cpu").manual_seed(0)
        delta = torch.randn(self.lm.d_model, generator=gen).to(self.lm.device, hidden.dtype)
        delta = delta * (0.1 * float(self.h_src_PTD.norm(dim=-1).median()) / float(delta.norm()))
        with torch.no_grad():
            base = rec.run(hidden, self.source, self.source)
            with add_to_output(self.lm.layout.mlp[self.source], lambda _i, _o: delta):
                moved = rec.run(hidden, self.source, self.source)
        err = float(((moved - base) - delta).norm() / (delta.norm() * (base.shape[0] * base.shape[1]) ** 0.5))
        tol = 1e-3 if hidden.dtype == torch.float32 else 3e-2
        return err < tol

    # --- shared prefix --------------------------------------------------------------------------------
    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.lm.model.config)

    def _record_prefixed(self, n_vectors: int) -> tuple:
        """Record block inputs for the prefix pass (batch C, filling a KV cache) and the suffix pass
        (batch C*P, reading the cache repeated per prompt). Returns (prefix replay, suffix replay, cache)."""
        L, P, C = self.prefix_len, self.n_prompts, n_vectors
        device = self.lm.device
        start = self.source if not self.additive else self.source + 1
        cache = self._new_cache()
        suffix_mask = self.mask[:, L:].repeat(C, 1)
        passes = [
            # the prefix pass runs the target block too: the cache must hold every layer up to it
            ("after", self.input_ids[:1, :L].repeat(C, 1), torch.ones(C, L, dtype=torch.long, device=device),
             torch.arange(L, device=device)[None].repeat(C, 1)),
            ("before", self.input_ids[:, L:].repeat(C, 1),
             torch.cat([torch.ones(C * P, L, dtype=torch.long, device=device), suffix_mask], 1),
             L + position_ids_for(suffix_mask)),
        ]
        recs = []
        for halt, ids, mask, pos in passes:
            with torch.no_grad(), BlockReplay.recording(self.lm, start, self.target, halt=halt) as rec:
                self.lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                              use_cache=True)
            rec.require(start, self.target)
            recs.append(rec)
            if halt == "after":
                cache.batch_repeat_interleave(P)
        return recs[0], recs[1], cache

    def _prefix_replay(self, n_vectors: int) -> tuple:
        if n_vectors not in self._prefixed:
            if len(self._prefixed) > 4:
                self._prefixed.clear()
            self._prefixed[n_vectors] = self._record_prefixed(n_vectors)
        return self._prefixed[n_vectors]

    def _check_prefix(self, ids: Sequence[Sequence[int]]) -> tuple[int, str]:
        """Length of the prefix to share (0 = none) and why."""
        if self.n_prompts < 2:
            return 0, "off (one prompt)"
        L = 0
        shortest = min(len(r) for r in ids)
        while L < shortest - 1 and all(r[L] == ids[0][L] for r in ids):
            L += 1
        if L < 4:
            return 0, f"off (shared prefix of {L} tokens)"
        self.prefix_len = L
        gen = torch.Generator(device="cpu").manual_seed(1)
        delta = torch.randn(2, self.lm.d_model, generator=gen).to(self.lm.device)
        delta = delta / delta.norm(dim=1, keepdim=True) * 0.1 * self.residual_norm()
        try:
            with torch.no_grad():
                shared = self.target_acts(delta)
                self.prefix_len = 0
                plain = self.target_acts(delta)
        except Exception as e:  # a family whose cache handling we cannot replay: use the plain path
            self.prefix_len, self._prefixed = 0, {}
            return 0, f"off ({type(e).__name__} while replaying with a KV cache)"
        keep = self.mask.bool()[None, :, :, None]
        err = float(((shared - plain) * keep).abs().max() / plain.abs().max().clamp_min(1e-12))
        self._prefixed = {} if err > 1e-4 else self._prefixed
        return (L, f"on ({L} tokens)") if err <= 1e-4 else (0, f"off (mismatch {err:.2g})")

    # --- the steered forward --------------------------------------------------------------------------
    def target_acts(self, delta: Tensor) -> Tensor:
        """Target-layer activations (C, P, T, D) with ``delta`` added to the source MLP output.
        ``delta`` is (C, D) (one vector per row, all tokens) or (C, P, T, D)."""
        P, (T, D) = self.n_prompts, self.h_src_PTD.shape[1:]
        delta4 = delta[:, None, None, :] if delta.ndim == 2 else delta
        C, L = delta4.shape[0], self.prefix_len
        with torch.autocast(self.lm.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision):
            if not L:
                return self._hidden_plain(delta4, self.target).float().reshape(C, P, T, D)
            z_pre, z_suf = self._hidden_prefixed(delta4, self.target)
        z_pre = z_pre.float()[:, None].expand(C, P, L, D)
        return torch.cat([z_pre, z_suf.float().reshape(C, P, T - L, D)], dim=2)

    def selected_acts(self, delta: Tensor) -> Tensor:
        """Target-layer activations (C, N, D) at the objective's N (prompt, token) pairs only.
        With :class:`RowTarget` (``self.rows_note``), the target block runs its K/V projections
        on every token and everything else on those N rows."""
        rt = self._rows
        if rt is None:
            return self.target_acts(delta)[:, self.sel_prompt, self.sel_token]
        P, (T, D), L = self.n_prompts, self.h_src_PTD.shape[1:], self.prefix_len
        delta4 = delta[:, None, None, :] if delta.ndim == 2 else delta
        C, N = delta4.shape[0], int(self.sel_prompt.shape[0])
        with torch.autocast(self.lm.device.type, dtype=torch.bfloat16, enabled=self.mixed_precision):
            if L:
                h_pre, h_suf = self._hidden_prefixed(delta4, self.target - 1)   # (C, L, D), (C*P, S, D)
                (k_pre, v_pre), (k_suf, v_suf) = rt.kv(h_pre, 0), rt.kv(h_suf, L)
                k = torch.cat([k_pre[:, None].expand(C, P, *k_pre.shape[1:]), k_suf.reshape(C, P, *k_suf.shape[1:])], 3)
                v = torch.cat([v_pre[:, None].expand(C, P, *v_pre.shape[1:]), v_suf.reshape(C, P, *v_suf.shape[1:])], 3)
                h = torch.cat([h_pre[:, None].expand(C, P, L, D), h_suf.reshape(C, P, T - L, D)], 2)
            else:
                h = self._hidden_plain(delta4, self.target - 1)                 # (C*P, T, D)
                k, v = rt.kv(h, 0)                                                # (C*P, Hkv, T, hd)
                k, v, h = k.reshape(C, P, *k.shape[1:]), v.reshape(C, P, *v.shape[1:]), h.reshape(C, P, T, D)
            kv_shape = (C * N, *k.shape[2:])
            out = rt.rows(h[:, self.sel_prompt, self.sel_token].reshape(C * N, D), self.sel_token.repeat(C),
                          k[:, self.sel_prompt].reshape(kv_shape), v[:, self.sel_prompt].reshape(kv_shape))
        return out.float().reshape(C, N, D)

    def _hidden_plain(self, delta4: Tensor, last: int) -> Tensor:
        """Output (C*P, T, D) of block ``last`` (source < last <= target), all prompts padded together."""
        P, (T, D) = self.n_prompts, self.h_src_PTD.shape[1:]
        C = delta4.shape[0]
        rec = self._replay(C)
        flat = delta4.to(self.h_src_PTD.dtype).expand(C, P, T, D).reshape(C * P, T, D)
        hidden = self.h_src_PTD.repeat(C, 1, 1) + flat if self.additive else rec.hidden_in(self.source)
        return self._run(rec, hidden, flat, last)

    def _run(self, rec: BlockReplay, hidden: Tensor, delta_flat: Tensor, last: int, old_cache=None,
             cache=None) -> Tensor:
        """Replay the recorded blocks up to ``last`` from ``hidden`` (the source block's output when additive,
        else its input, with ``delta_flat`` added to its MLP output); the recording's KV cache is swapped
        for ``cache``."""
        replace = ((old_cache, cache),) if old_cache is not None else ()
        if self.additive:
            return rec.run(hidden, self.source + 1, last, replace=replace)
        with add_to_output(self.lm.layout.mlp[self.source], lambda _i, _o: delta_flat):
            return rec.run(hidden, self.source, last, replace=replace)

    def _hidden_prefixed(self, delta4: Tensor, last: int) -> tuple[Tensor, Tensor]:
        """Output of block ``last`` for the shared prefix once per vector (C, L, D), filling a fresh KV
        cache, then for every prompt's suffix (C*P, T-L, D)."""
        C, P, L = delta4.shape[0], self.n_prompts, self.prefix_len
        T, D = self.h_src_PTD.shape[1:]
        rec_p, rec_s, old = self._prefix_replay(C)
        cache = self._new_cache()
        delta4 = delta4.to(self.h_src_PTD.dtype)
        d_pre = delta4[:, 0, :L] if delta4.shape[2] > 1 else delta4[:, 0].expand(C, L, D)        # (C, L, D)
        d_suf = (delta4[:, :, L:] if delta4.shape[2] > 1 else delta4).expand(C, P, T - L, D)      # (C, P, S, D)
        d_suf = d_suf.reshape(C * P, T - L, D)
        h = self.h_src_PTD[:1, :L] + d_pre if self.additive else rec_p.hidden_in(self.source)
        z_pre = self._run(rec_p, h, d_pre, last, old, cache)
        cache.batch_repeat_interleave(P)
        if self.additive:
            h = (self.h_src_PTD[None, :, L:] + d_suf.reshape(C, P, T - L, D)).reshape(C * P, T - L, D)
        else:
            h = rec_s.hidden_in(self.source)
        z_suf = self._run(rec_s, h, d_suf, last, old, cache)
        return z_pre, z_suf

    # --- the target block at the selected rows only -----------------------------------------------------
    def _check_rows(self) -> tuple[RowTarget | None, str]:
        """Use :class:`RowTarget` when it applies, saves work and matches the block numerically."""
        T = int(self.h_src_PTD.shape[1])
        if 2 * int(self.sel_prompt.shape[0]) > self.n_prompts * T:
            return None, "off (the objective reads most tokens)"
        try:
            parts = self.lm.layout.rotary(self.target)
        except ModelError as e:
            return None, f"off ({e})"
        if parts is None:
            return None, f"off (not a pre-norm rotary block: {self.lm.layout.spec.family})"
        tables = rotary_tables(parts, self._replay(1).calls[self.target].kwargs, self.lengths)
        if tables is None:
            return None, "off (no rotary tables recorded)"
        gen = torch.Generator(device="cpu").manual_seed(2)
        delta = torch.randn(2, self.lm.d_model, generator=gen).to(self.lm.device)
        delta = delta / delta.norm(dim=1, keepdim=True) * 0.1 * self.residual_norm()
        try:
            with torch.no_grad():
                want = self.target_acts(delta)[:, self.sel_prompt, self.sel_token]
                self._rows = RowTarget(parts, *tables)
                got = self.selected_acts(delta)
        except Exception as e:  # an unexpected block layout: use the block itself
            self._rows = None
            return None, f"off ({type(e).__name__})"
        finally:
            rt, self._rows = self._rows, None
        err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
        tol = 1e-4 if self.h_src_PTD.dtype == torch.float32 else 3e-2
        if not err <= tol:
            return None, f"off (mismatch {err:.2g})"
        return rt, f"on ({int(self.sel_prompt.shape[0])} of {sum(self.lengths)} rows)"

    def objective(self, z_CPTD: Tensor, p: float, q: float) -> Tensor:
        """The MELBO objective (C,) of target activations from :meth:`target_acts`."""
        return self.objective_selected(z_CPTD[:, self.sel_prompt, self.sel_token], p, q)

    def objective_selected(self, z_CND: Tensor, p: float, q: float) -> Tensor:
        """The MELBO objective (C,) of target activations at the selected pairs (:meth:`selected_acts`)."""
        diff = z_CND - self.z0_PTD[self.sel_prompt, self.sel_token]
        return melbo_objective(diff.pow(2).sum(-1), self.sel_prompt, self.n_prompts, p, q)

    def objective_of(self, delta: Tensor, p: float, q: float) -> Tensor:
        """The MELBO objective (C,) of perturbations ``delta`` (as for :meth:`target_acts`), computed
        the fastest exact way."""
        return self.objective_selected(self.selected_acts(delta), p, q)

    def residual_norm(self) -> float:
        """Median norm of the unsteered source-layer output over the prompts' real tokens."""
        keep = self.mask.bool()
        return float(self.h_src_PTD.norm(dim=-1)[keep].median())

    def tokens_per_vector(self) -> int:
        T = int(self.input_ids.shape[1])
        return self.prefix_len + self.n_prompts * (T - self.prefix_len)


__all__ = ["EncodedPrompts", "SteeredSlice", "add_to_output", "encode_prompts", "format_prompts",
           "melbo_objective"]
