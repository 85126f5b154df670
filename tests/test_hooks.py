"""Hook points on tiny random models of every family: exact no-ops, true values, padding, scoping."""

from __future__ import annotations

import pytest
import torch

from riskscope.errors import RiskscopeError
from riskscope.hooks import (
    HOOKS, Ablate, Add, BlockReplay, Clamp, HookPoint, Scale, Set, capture, intervene, pad_batch, run_batch, run_texts,
    tokenize,
)

from conftest import make_tiny

TEXTS = ["hello world", "ab", "the quick brown fox jumps over", "risk"]  # 11, 2, 30, 4 tokens

# Module names written out by hand (not read from riskscope's adapters), so the check is independent.
_LLAMA_LIKE = ("model.layers.{i}", "model.layers.{i}.self_attn", "model.layers.{i}.mlp",
               "model.layers.{i}.mlp.down_proj")
MODULE_NAMES = {
    "gpt2": ("transformer.h.{i}", "transformer.h.{i}.attn", "transformer.h.{i}.mlp", "transformer.h.{i}.mlp.c_proj"),
    "gpt_neox": ("gpt_neox.layers.{i}", "gpt_neox.layers.{i}.attention", "gpt_neox.layers.{i}.mlp",
                 "gpt_neox.layers.{i}.mlp.dense_4h_to_h"),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


def _all_points(lm) -> list[HookPoint]:
    return [HookPoint(h, i) for i in range(lm.n_layers) for h in HOOKS]


def _logits(lm, texts=TEXTS, side="right") -> torch.Tensor:
    out, _ = run_texts(lm, texts, side=side)
    return out.logits


def _hooks_left(lm) -> list[str]:
    """Names of modules that still carry a forward hook or pre-hook (plus global hooks)."""
    left = [name or "<root>" for name, m in lm.model.named_modules() if m._forward_hooks or m._forward_pre_hooks]
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        left.append("<global>")
    return left


# --- exact no-ops ------------------------------------------------------------------------------------


def test_noop_interventions_and_capture_give_identical_logits(tiny):
    clean = _logits(tiny)
    points = _all_points(tiny)
    noops = [Add(p, vector=torch.zeros(p.width(tiny))) for p in points]
    noops += [Scale(p, indices=tuple(range(p.width(tiny))), factor=1.0) for p in points]
    noops += [Add(p, vector=torch.zeros(p.width(tiny)), positions="last") for p in points]
    with intervene(tiny, noops), capture(tiny, points, "mean") as got:
        hooked = _logits(tiny)
    assert set(got) == set(points)
    assert torch.equal(hooked, clean)
    assert torch.equal(_logits(tiny), clean)


def test_setting_a_point_to_its_own_value_is_a_noop(tiny):
    text = ["one text"]
    clean = _logits(tiny, text)
    points = _all_points(tiny)
    with capture(tiny, points, "last") as got:
        _logits(tiny, text)
    for p in points:
        with intervene(tiny, [Set(p, value=got[p][0], positions="last")]):
            assert torch.equal(_logits(tiny, text), clean), p


# --- captured values are the modules' real inputs and outputs ----------------------------------------


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def test_capture_equals_module_inputs_and_outputs(tiny, request):
    family = request.node.callspec.params["tiny"]
    block, attn, mlp, down = MODULE_NAMES.get(family, _LLAMA_LIKE)
    modules = dict(tiny.model.named_modules())
    seen: dict[HookPoint, torch.Tensor] = {}
    handles = []

    def pre(point):
        def hook(mod, args, kwargs):
            seen[point] = (args[0] if args else kwargs["hidden_states"]).clone()
        return hook

    def post(point):
        def hook(mod, args, output):
            seen[point] = _first(output).clone()
        return hook

    for i in range(tiny.n_layers):
        handles += [
            modules[block.format(i=i)].register_forward_pre_hook(pre(HookPoint("resid_pre", i)), with_kwargs=True),
            modules[block.format(i=i)].register_forward_hook(post(HookPoint("resid_post", i))),
            modules[attn.format(i=i)].register_forward_hook(post(HookPoint("attn_out", i))),
            modules[mlp.format(i=i)].register_forward_hook(post(HookPoint("mlp_out", i))),
            modules[down.format(i=i)].register_forward_pre_hook(pre(HookPoint("mlp_neurons", i)), with_kwargs=True),
        ]
    try:
        with capture(tiny, _all_points(tiny), "all") as got:
            out, _ = run_texts(tiny, TEXTS, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    assert set(seen) == set(got) == set(_all_points(tiny))
    for p in got:
        assert got[p].shape[-1] == p.width(tiny)
        assert torch.equal(got[p], seen[p]), p
    hs = out.hidden_states
    assert torch.equal(got[HookPoint("resid_pre", 0)], hs[0])  # the embedding output
    for i in range(tiny.n_layers - 1):  # the last hidden state has the final norm applied
        assert torch.equal(got[HookPoint("resid_post", i)], hs[i + 1])
        assert torch.equal(got[HookPoint("resid_pre", i + 1)], hs[i + 1])


def test_reductions_pick_the_right_tokens(tiny):
    points = [HookPoint("resid_post", 1), HookPoint("mlp_neurons", 0)]
    with capture(tiny, points, "all") as full:
        _, mask = run_texts(tiny, TEXTS, side="left")
    for how in ("last", "mean", [0, -1], [1]):
        with capture(tiny, points, how) as got:
            run_texts(tiny, TEXTS, side="left")
        for p in points:
            for b in range(len(TEXTS)):
                real = full[p][b][mask[b].bool()]  # (n_tokens, W)
                if how == "last":
                    want = real[-1]
                elif how == "mean":
                    want = real.mean(0)
                else:
                    want = real[how]
                torch.testing.assert_close(got[p][b], want, atol=1e-6, rtol=0)


# --- padding equivalence -------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["last", "mean", (0, 1, -1), "all"])
def test_left_right_padding_and_alone_agree(tiny, how):
    points = _all_points(tiny)
    batched = {}
    for side in ("left", "right"):
        with capture(tiny, points, how) as got:
            _, mask = run_texts(tiny, TEXTS, side=side)
        batched[side] = (dict(got), mask)
    for b, text in enumerate(TEXTS):
        with capture(tiny, points, how) as alone:
            run_texts(tiny, [text])
        for side, (got, mask) in batched.items():
            for p in points:
                x = got[p][b][mask[b].bool()] if how == "all" else got[p][b]
                torch.testing.assert_close(x, alone[p][0], atol=1e-5, rtol=0,
                                           msg=lambda m: f"{side} padding, text {b}, {p}: {m}")


def test_run_batch_matches_unpadded_forward(tiny):
    """The hand padding + explicit position_ids reproduce a plain HF forward on each text alone."""
    for text, ids in zip(TEXTS, tokenize(tiny, TEXTS)):
        plain = tiny.model(input_ids=torch.tensor([ids])).logits[0]
        input_ids, mask = pad_batch(tokenize(tiny, TEXTS), tiny.tokenizer.pad_token_id, "left")
        b = TEXTS.index(text)
        padded = run_batch(tiny, input_ids, mask).logits[b][mask[b].bool()]
        torch.testing.assert_close(padded, plain, atol=1e-5, rtol=0)


# --- every op edits inside its context and leaves nothing behind ---------------------------------------

OPS = {
    "set": lambda lm: Set(HookPoint("resid_pre", 1), value=torch.randn(lm.d_model)),
    "add": lambda lm: Add(HookPoint("resid_post", 0), vector=torch.randn(lm.d_model), scale=4.0),
    "clamp": lambda lm: Clamp(HookPoint("mlp_neurons", 1), indices=(0, 3, 5), value=10.0),
    "clamp_per_unit": lambda lm: Clamp(HookPoint("mlp_neurons", 0), indices=(1, 2), value=torch.tensor([5.0, -5.0])),
    "scale": lambda lm: Scale(HookPoint("attn_out", 0), indices=tuple(range(0, lm.d_model, 2)), factor=-3.0),
    "ablate_zero": lambda lm: Ablate(HookPoint("mlp_out", 1)),
    "ablate_zero_units": lambda lm: Ablate(HookPoint("mlp_neurons", 2), indices=tuple(range(20))),
    "ablate_mean": lambda lm: Ablate(HookPoint("mlp_neurons", 0), mean=3 * torch.randn(lm.layout.d_mlp)),
    "ablate_mean_units": lambda lm: Ablate(HookPoint("resid_post", 1), indices=(0, 1, 2, 3),
                                           mean=5 + torch.randn(lm.d_model)),
}


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma2", "phi3", "qwen3"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_op_changes_output_inside_and_is_removed_after(family, op):
    lm = make_tiny(family)
    clean = _logits(lm)
    torch.manual_seed(1)
    the_op = OPS[op](lm)
    assert _hooks_left(lm) == []
    with intervene(lm, [the_op]):
        assert _hooks_left(lm) != []
        edited = _logits(lm)
    assert not torch.allclose(edited, clean, atol=1e-4), f"{the_op} changed nothing"
    assert _hooks_left(lm) == []
    assert torch.equal(_logits(lm), clean)

    with pytest.raises(KeyError, match="boom"):  # an error inside the block removes the hooks too
        with intervene(lm, [the_op]), capture(lm, [HookPoint("resid_post", 0)]):
            _logits(lm)
            raise KeyError("boom")
    assert _hooks_left(lm) == []
    assert torch.equal(_logits(lm), clean)


def test_ops_are_printable_frozen_values():
    op = Clamp(HookPoint("mlp_neurons", 3), indices=(1, 2), value=0.5, positions="last")
    assert "mlp_neurons" in repr(op) and "positions='last'" in repr(op)
    assert str(HookPoint("mlp_neurons", 3)) == "mlp_neurons.3"
    assert HookPoint.parse("mlp_neurons.-1") == HookPoint("mlp_neurons", -1)
    with pytest.raises(AttributeError):
        op.value = 1.0  # type: ignore[misc]
    with pytest.raises(RiskscopeError, match="unknown hook"):
        HookPoint("resid_middle", 0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_position_edits_only_the_last_real_token(tiny, side):
    clean, mask = run_texts(tiny, TEXTS, side=side)
    op = Add(HookPoint("resid_pre", 0), vector=10 * torch.randn(tiny.d_model), positions="last")
    with intervene(tiny, [op]):
        edited, _ = run_texts(tiny, TEXTS, side=side)
    for b in range(len(TEXTS)):
        real = mask[b].bool()
        before, after = clean.logits[b][real], edited.logits[b][real]
        torch.testing.assert_close(after[:-1], before[:-1], atol=1e-6, rtol=0)
        assert not torch.allclose(after[-1], before[-1], atol=1e-3)


def test_explicit_positions_edit_only_those_tokens(tiny):
    clean, mask = run_texts(tiny, TEXTS, side="left")
    op = Set(HookPoint("resid_post", 0), value=torch.ones(tiny.d_model), positions=[1])
    with intervene(tiny, [op]):
        edited, _ = run_texts(tiny, TEXTS, side="left")
    for b in range(len(TEXTS)):
        real = mask[b].bool()
        before, after = clean.logits[b][real], edited.logits[b][real]
        torch.testing.assert_close(after[:1], before[:1], atol=1e-6, rtol=0)
        assert not torch.allclose(after[1], before[1], atol=1e-3)


# --- layer and unit indices ------------------------------------------------------------------------------


def test_negative_layers_normalise(tiny):
    n = tiny.n_layers
    assert HookPoint("resid_post", -1).normalised(tiny) == HookPoint("resid_post", n - 1)
    assert HookPoint("mlp_neurons", -n).normalised(tiny) == HookPoint("mlp_neurons", 0)
    with capture(tiny, [HookPoint("mlp_out", -1)]) as neg:
        _logits(tiny)
    with capture(tiny, [HookPoint("mlp_out", n - 1)]) as pos:
        _logits(tiny)
    assert list(neg) == [HookPoint("mlp_out", n - 1)]
    assert torch.equal(neg[HookPoint("mlp_out", n - 1)], pos[HookPoint("mlp_out", n - 1)])
    vec = torch.randn(tiny.d_model)
    with intervene(tiny, [Add(HookPoint("resid_pre", -2), vector=vec)]):
        a = _logits(tiny)
    with intervene(tiny, [Add(HookPoint("resid_pre", n - 2), vector=vec)]):
        b = _logits(tiny)
    assert torch.equal(a, b)


@pytest.mark.parametrize("layer", [3, 100, -4])
def test_out_of_range_layer_is_a_clear_error(layer):
    lm = make_tiny("llama")  # 3 layers
    with pytest.raises(RiskscopeError, match=rf"layer {layer} does not exist.*3 layers"):
        with capture(lm, [HookPoint("resid_post", layer)]):
            pass
    ok = Add(HookPoint("resid_post", 0), vector=torch.zeros(lm.d_model))
    with pytest.raises(RiskscopeError, match=rf"layer {layer} does not exist"):
        with intervene(lm, [ok, Add(HookPoint("resid_post", layer), vector=torch.zeros(lm.d_model))]):
            pass
    assert _hooks_left(lm) == []  # the first op's hook, registered before the error, is gone


@pytest.mark.parametrize("op", [
    Clamp(HookPoint("mlp_neurons", 0), indices=(48,), value=1.0),
    Scale(HookPoint("mlp_neurons", 0), indices=(0, -49), factor=2.0),
    Ablate(HookPoint("resid_post", 1), indices=(32,)),
])
def test_out_of_range_unit_is_a_clear_error(op):
    lm = make_tiny("llama")  # d_model 32, d_mlp 48
    with pytest.raises(RiskscopeError, match="unit index out of range"):
        with intervene(lm, [op]):
            _logits(lm)
    assert _hooks_left(lm) == []


def test_out_of_range_positions_are_a_clear_error():
    lm = make_tiny("llama")
    with pytest.raises(RiskscopeError, match="positions"):
        with capture(lm, [HookPoint("resid_post", 0)], [5]):
            _logits(lm, ["abc"])
    assert _hooks_left(lm) == []


# --- stopping early ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_text"])
@pytest.mark.parametrize("deepest", [0, 1])
def test_capture_stop_skips_later_layers(family, deepest):
    lm = make_tiny(family)
    points = [HookPoint("mlp_neurons", 0), HookPoint("resid_post", deepest), HookPoint("attn_out", deepest)]
    with capture(lm, points, "mean") as full:
        _logits(lm)
    calls = {i: 0 for i in range(lm.n_layers)}
    calls["final_norm"] = calls["unembed"] = 0

    def counter(key):
        def hook(mod, args):
            calls[key] += 1
        return hook

    handles = [b.register_forward_pre_hook(counter(i)) for i, b in enumerate(lm.layout.blocks)]
    handles.append(lm.layout.final_norm.register_forward_pre_hook(counter("final_norm")))
    handles.append(lm.layout.unembed.register_forward_pre_hook(counter("unembed")))
    try:
        input_ids, mask = pad_batch(tokenize(lm, TEXTS), 0, "right")
        with capture(lm, points, "mean", stop=True) as got:
            assert run_batch(lm, input_ids, mask) is None
    finally:
        for h in handles:
            h.remove()
    assert calls == {**{i: int(i <= deepest) for i in range(lm.n_layers)}, "final_norm": 0, "unembed": 0}
    for p in points:
        assert torch.equal(got[p], full[p])
    assert _hooks_left(lm) == []


# --- block replay --------------------------------------------------------------------------------------


REPLAY_FAMILIES = ["llama", "gemma2", "gemma3_text", "gpt2"]


@pytest.mark.parametrize("family", REPLAY_FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_block_replay_without_an_edit_reproduces_the_full_forward(family, side):
    lm = make_tiny(family)
    input_ids, mask = pad_batch(tokenize(lm, TEXTS), 0, side)
    with torch.no_grad():
        full = run_batch(lm, input_ids, mask).logits
        rec = BlockReplay.record(lm, input_ids, mask, halt=None)
        for start in range(lm.n_layers):
            h = rec.run(rec.hidden_in(start), start)
            torch.testing.assert_close(rec.logits(h), full, atol=1e-5, rtol=0)
            torch.testing.assert_close(rec.logits(h, -1), full[:, -1], atol=1e-5, rtol=0)
    if family == "gemma2":  # the adapter's final-logit soft cap is part of the replayed logits
        assert lm.layout.logit_softcap == lm.model.config.final_logit_softcapping > 0
    assert _hooks_left(lm) == []


@pytest.mark.parametrize("family", REPLAY_FAMILIES)
def test_block_replay_with_ops_equals_the_intervened_forward(family):
    lm = make_tiny(family)
    input_ids, mask = pad_batch(tokenize(lm, TEXTS), 0, "left")
    ops = [Add(HookPoint("resid_post", 1), vector=torch.linspace(-1, 1, lm.d_model), positions="last"),
           Clamp(HookPoint("mlp_neurons", 2), indices=(0, 3), value=1.5)]
    with torch.no_grad():
        with intervene(lm, ops):
            want = run_batch(lm, input_ids, mask).logits[:, -1]
        rec = BlockReplay.record(lm, input_ids, mask, halt=None)
        got = rec.logits(rec.run(rec.hidden_in(1), 1, ops=ops), -1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)  # position-aware ops saw the recorded mask
    assert _hooks_left(lm) == []


@pytest.mark.parametrize("halt,ran", [("before", [0, 1]), ("after", [0, 1, 2]), (None, [0, 1, 2])])
def test_block_replay_recording_stops_early(halt, ran):
    lm = make_tiny("llama")
    input_ids, mask = pad_batch(tokenize(lm, TEXTS), 0, "right")
    seen: list[int] = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: seen.append(i)) for i, b in enumerate(lm.layout.blocks)]
    try:
        with torch.no_grad():
            rec = BlockReplay.record(lm, input_ids, mask, 1, 2, halt=halt)
    finally:
        for h in handles:
            h.remove()
    assert seen == ran and rec.layers == [1, 2]
    with torch.no_grad():
        with capture(lm, [HookPoint("resid_post", 1)], "all") as got:
            run_batch(lm, input_ids, mask)
        h1 = rec.run(rec.hidden_in(1), 1, 1)
        assert rec.run(h1, 2, 1) is h1  # an empty range of blocks returns its input
    torch.testing.assert_close(h1, got[HookPoint("resid_post", 1)], atol=1e-6, rtol=0)
    assert _hooks_left(lm) == []


def test_block_replay_names_blocks_never_called():
    lm = make_tiny("llama")
    input_ids, mask = pad_batch(tokenize(lm, TEXTS), 0, "right")
    with torch.no_grad(), BlockReplay.recording(lm, 0, 1) as rec:
        run_batch(lm, input_ids, mask, output_hidden_states=False)
    assert rec.complete(0, 1) and not rec.complete()
    with pytest.raises(RiskscopeError, match=r"blocks \[2\] of tiny-llama were never called.*--module-paths blocks="):
        rec.require()
