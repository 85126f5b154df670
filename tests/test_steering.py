"""Steering vectors from the store, steered generation, the caution demo, llama.cpp control vectors."""

from __future__ import annotations

import os

import gguf
import numpy as np
import pytest
import torch

from riskscope.steering import (
    caution_demo, diff_of_means_vector, generate, probe_vector, random_like, risk_mentions, save_risk_vector,
    steer_compare,
)
from riskscope.steering import export_control_vector, import_control_vector, read_control_vector_info
from riskscope.errors import RiskscopeError
from riskscope.steering import SteeringVector

from conftest import make_tiny
from test_neurons import _probe, hooks_left, make_store


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models run fastest on one thread


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    lm = make_tiny("llama")
    return lm, make_store(lm, tmp_path_factory.mktemp("store") / "s", n_pairs=6)


# --- vectors from the store ---------------------------------------------------------------------


def test_diff_of_means_vector_is_the_class_mean_difference(store):
    lm, st = store
    vec = diff_of_means_vector(st)
    assert vec.hook == "resid_post" and vec.layers == [0, 1, 2] and vec.model == lm.model_id
    X, y = st.read("resid_post.1"), st.labels
    np.testing.assert_allclose(vec.vectors[1].numpy(), X[y == 1].mean(0) - X[y == 0].mean(0), rtol=1e-5, atol=1e-6)
    unit = diff_of_means_vector(st, layers=[2], normalize=True)
    assert unit.layers == [2] and abs(unit.norms()[2] - 1) < 1e-5
    neurons = diff_of_means_vector(st, "mlp_neurons", [0])
    assert neurons.width == lm.layout.d_mlp
    with pytest.raises(RiskscopeError, match="holds no attn_out"):
        diff_of_means_vector(st, "attn_out")
    with pytest.raises(RiskscopeError, match="no resid_post at layer"):
        diff_of_means_vector(st, layers=[9])


def test_random_like_keeps_norms_and_probe_vector_points_along_the_probe(store):
    lm, _ = store
    v = SteeringVector({1: torch.arange(32.0), 2: torch.ones(32)})
    r = random_like(v, seed=3)
    for k in v.layers:
        assert abs(r.norms()[k] - v.norms()[k]) < 1e-4
    assert abs(float(torch.nn.functional.cosine_similarity(r.vectors[1], v.vectors[1], dim=0))) < 0.9
    assert torch.equal(random_like(v, seed=3).vectors[1], r.vectors[1])
    p = _probe(lm, "resid_post", 1)
    pv = probe_vector(p, norm=2.0)
    assert pv.layers == [1] and abs(pv.norms()[1] - 2.0) < 1e-5
    np.testing.assert_allclose(pv.vectors[1].numpy() / 2.0, p.direction() / np.linalg.norm(p.direction()), atol=1e-6)


# --- generation ------------------------------------------------------------------------------------


def test_zero_vector_changes_no_completion_and_a_big_one_does():
    lm = make_tiny("llama")
    prompts = ["hello", "the door"]
    base = generate(lm, prompts, max_new_tokens=6, chat=False)
    zero = SteeringVector({1: torch.zeros(32)})
    assert generate(lm, prompts, zero, scale=5.0, max_new_tokens=6, chat=False) == base
    big = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(0)) * 50})
    samples = steer_compare(lm, prompts, big, scale=1.0, max_new_tokens=6, chat=False)
    assert [s.unsteered for s in samples] == base
    assert any(s.steered != s.unsteered for s in samples)
    assert generate(lm, prompts, big, scale=1.0, positions="last", max_new_tokens=6, chat=False) != base
    assert hooks_left(lm) == []


def test_steering_rejects_vectors_that_do_not_fit():
    lm = make_tiny("llama")
    with pytest.raises(RiskscopeError, match="width 16 does not match"):
        generate(lm, ["hi"], SteeringVector({1: torch.ones(16)}), max_new_tokens=2, chat=False)
    with pytest.raises(RiskscopeError, match="layer 7 does not exist"):
        generate(lm, ["hi"], SteeringVector({7: torch.ones(32)}), max_new_tokens=2, chat=False)
    with pytest.raises(RiskscopeError, match="positions None"):
        generate(lm, ["hi"], SteeringVector({1: torch.ones(32)}), positions=(0,), max_new_tokens=2, chat=False)


def test_caution_demo_reports_vector_against_random_control(store):
    lm, st = store
    vec = diff_of_means_vector(st)
    demo = caution_demo(lm, vec, ["hello there", "the door was", "my app"], layers=[1], scale=8.0,
                        probe=_probe(lm, "resid_post", 2), n_generate=2, max_new_tokens=4, chat=False)
    d = demo.to_dict()
    assert d["layers"] == [1] and d["n_prompts"] == 3 and len(d["samples"]) == 2
    for cond in ("steered", "random"):
        assert set(d[cond]) == {"risk_dlogp", "risk_dlogodds", "kl", "probe_delta", "mention_rate",
                                "mentions_per_completion"}
        assert d[cond]["kl"] > 0
    assert 0.0 <= demo.wins <= 1.0
    with pytest.raises(RiskscopeError, match="has no layer"):
        caution_demo(lm, vec, ["x"], layers=[5])
    assert risk_mentions("Be careful: phishing and a weak Password are risks.") == 4


# --- llama.cpp control vectors ---------------------------------------------------------------------


def _vec(layers=(1, 2, 5), width=8, hook="resid_post") -> SteeringVector:
    g = torch.Generator().manual_seed(0)
    return SteeringVector({k: torch.randn(width, generator=g) for k in layers}, hook=hook, model="tiny-llama",
                          meta={"model_type": "llama", "method": "test"})


def test_control_vector_round_trip_and_metadata(tmp_path):
    vec = _vec()
    path = export_control_vector(vec, tmp_path / "risk.gguf")
    reader = gguf.GGUFReader(str(path))
    arch = reader.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    hint = reader.get_field("controlvector.model_hint")
    assert bytes(hint.parts[hint.data[0]]).decode() == "llama"
    count = reader.get_field("controlvector.layer_count")
    assert int(count.parts[count.data[0]][0]) == 3
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2", "direction.5"]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 and t.n_elements == 8 for t in reader.tensors)
    back = import_control_vector(path)
    assert back.hook == "resid_post" and back.layers == [1, 2, 5] and back.model == "tiny-llama"
    for k in vec.layers:
        assert torch.equal(back.vectors[k], vec.vectors[k])
    assert back.meta["method"] == "test" and back.meta["model_hint"] == "llama"
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_resid_pre_vectors_shift_by_one_block(tmp_path):
    vec = _vec(layers=(2, 3), hook="resid_pre")  # the input of block k is the output of block k - 1
    path = export_control_vector(vec, tmp_path / "pre.gguf")
    assert sorted(read_control_vector_info(path)["tensors"]) == ["direction.1", "direction.2"]
    back = import_control_vector(path)
    assert back.hook == "resid_pre" and back.layers == [2, 3]
    with pytest.raises(RiskscopeError, match="embedding output"):
        export_control_vector(_vec(layers=(0, 1), hook="resid_pre"), tmp_path / "x.gguf")


def test_layer_zero_and_other_hooks_are_refused(tmp_path):
    vec = _vec(layers=(0, 1))
    with pytest.raises(RiskscopeError, match="rejects direction.0"):
        export_control_vector(vec, tmp_path / "a.gguf")
    path = export_control_vector(vec, tmp_path / "a.gguf", drop_layer0=True)
    assert import_control_vector(path).layers == [1]
    with pytest.raises(RiskscopeError, match="cannot be exported"):
        export_control_vector(_vec(hook="mlp_out"), tmp_path / "b.gguf")
    with pytest.raises(RiskscopeError, match="no layer >= 1"):
        export_control_vector(_vec(layers=(0,)), tmp_path / "c.gguf", drop_layer0=True)
    lm = make_tiny("llama")
    with pytest.raises(RiskscopeError, match="width 8 does not match"):
        export_control_vector(_vec(), tmp_path / "d.gguf", lm=lm)


def test_foreign_and_broken_files_give_clear_errors(tmp_path):
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(RiskscopeError, match="not a GGUF file"):
        import_control_vector(tmp_path / "junk.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(RiskscopeError, match="not a control vector .*'llama'"):
        import_control_vector(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "controlvector")
    w.add_tensor("direction.1", np.zeros(8, np.float32))
    w.add_tensor("direction.2", np.zeros(6, np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(RiskscopeError, match="different lengths"):
        import_control_vector(tmp_path / "odd.gguf")
    with pytest.raises(RiskscopeError, match="no such file"):
        import_control_vector(tmp_path / "missing.gguf")


def test_repeng_style_file_imports(tmp_path):
    """What repeng's ``ControlVector.export_gguf`` writes: model_hint, layer_count, direction.<k> (float32)."""
    dirs = {k: np.random.default_rng(k).normal(size=16).astype(np.float32) for k in (3, 4, 5)}
    w = gguf.GGUFWriter(str(tmp_path / "repeng.gguf"), "controlvector")
    w.add_string("controlvector.model_hint", "mistral")
    w.add_uint32("controlvector.layer_count", len(dirs))
    for k, d in dirs.items():
        w.add_tensor(f"direction.{k}", d)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    vec = import_control_vector(tmp_path / "repeng.gguf")
    assert vec.hook == "resid_post" and vec.layers == [3, 4, 5] and vec.model is None
    assert vec.meta["model_hint"] == "mistral"
    np.testing.assert_array_equal(vec.vectors[4].numpy(), dirs[4])


def test_save_risk_vector_writes_both_formats(store, tmp_path):
    lm, st = store
    paths = save_risk_vector(st, tmp_path)
    assert set(paths) == {"safetensors", "json", "gguf"}
    vec = SteeringVector.load(paths["safetensors"])
    assert vec.layers == [0, 1, 2] and vec.meta["method"] == "diff_of_means"
    assert import_control_vector(paths["gguf"]).layers == [1, 2]  # block 0 cannot be steered by llama.cpp
    vec.check(lm)


# --- slow: the default model; optional: a real llama.cpp build ----------------------------------------


@pytest.fixture(scope="module")
def default_store(default_lm, tmp_path_factory):
    """resid_post.16 of 32 pairs of the built-in dataset (last token)."""
    from riskscope.data import load_dataset
    from riskscope.hooks import HookPoint
    from riskscope.data import CacheConfig, Store, cache_activations

    root = tmp_path_factory.mktemp("default") / "store"
    cfg = CacheConfig(points=(HookPoint("resid_post", 16),), batch_size=16)
    cache_activations(default_lm, load_dataset().limit(32), root, cfg)
    return Store.open(root)


@pytest.mark.slow
def test_risk_vector_lifts_risk_words_more_than_a_random_vector(default_lm, default_store):
    from riskscope.steering import NEUTRAL_PROMPTS
    from riskscope.effects import run_effects

    vec = diff_of_means_vector(default_store, layers=[16])
    rnd = random_like(vec, seed=0)
    eff = run_effects(default_lm, NEUTRAL_PROMPTS[:8], {"risk": vec.ops(4.0), "random": rnd.ops(4.0)})
    assert eff["risk"].risk_dlogodds > eff["random"].risk_dlogodds + 0.3
    assert eff["risk"].risk_dlogp > 0.2
    prompts = ["The printer is on the shelf. Next, we"]
    assert generate(default_lm, prompts, vec * 0.0, max_new_tokens=5, chat=False) == \
        generate(default_lm, prompts, max_new_tokens=5, chat=False)
    assert hooks_left(default_lm) == []


def _llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        return None
    return llama_cpp


@pytest.mark.slow
@pytest.mark.skipif(_llama_cpp() is None, reason="llama-cpp-python is not installed (optional)")
def test_llama_cpp_adds_direction_k_to_block_k_output(default_lm, tmp_path):
    """A real llama.cpp build moves the logits like riskscope's resid_post.k add, not k - 1 or k + 1."""
    from riskscope.effects import run_effects
    from riskscope.models import NAMED_MODELS
    from riskscope.models import named_gguf

    llama_cpp = _llama_cpp()
    _, gguf_path = named_gguf(next(iter(NAMED_MODELS)))
    text = "The intern pasted the admin password into the public chat. The risk seems"
    g = torch.Generator().manual_seed(0)
    k = 12
    direction = torch.randn(default_lm.d_model, generator=g) * 8.0
    path = export_control_vector(SteeringVector({k: direction}), tmp_path / "cv.gguf")

    ids = default_lm.tokenizer([text], add_special_tokens=True)["input_ids"][0]
    d, n = default_lm.d_model, default_lm.n_layers
    reader = import_control_vector(path)  # lay the buffer out as common_control_vector_load does: slot k - 1
    data = np.zeros(d * (n - 1), np.float32)
    for layer, v in reader.vectors.items():
        data[d * (layer - 1):d * layer] += v.numpy()

    def llama_cpp_logprobs(cvec: bool) -> np.ndarray:
        llm = llama_cpp.Llama(str(gguf_path), n_ctx=256, verbose=False, n_threads=2, logits_all=True)
        ctx = llm._ctx.ctx
        if cvec:
            apply = getattr(llama_cpp, "llama_set_adapter_cvec", None) or llama_cpp.llama_apply_adapter_cvec
            ptr = data.ctypes.data_as(llama_cpp.ctypes.POINTER(llama_cpp.ctypes.c_float))
            assert apply(ctx, ptr, len(data), d, 1, n - 1) == 0
        llm.eval(ids)
        z = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        return z - np.logaddexp.reduce(z)

    shift_cpp = llama_cpp_logprobs(True) - llama_cpp_logprobs(False)
    V = len(shift_cpp)
    top = np.argsort(-np.abs(shift_cpp))[:500]  # the tokens llama.cpp moved most
    corr = {}
    for layer in (k - 1, k, k + 1):
        e = run_effects(default_lm, [text], {"x": SteeringVector({layer: direction}).ops()}, top_tokens=V,
                        min_prob=0.0)["x"]
        shift = np.zeros(V)
        shift[[t.token_id for t in e.boosts]] = [t.mean_dlogp for t in e.boosts]
        corr[layer] = np.corrcoef(shift_cpp[top], shift[top])[0, 1]
    assert corr[k] > 0.99 and corr[k - 1] < 0.98 and corr[k + 1] < 0.98  # measured: 1.000 vs 0.92 and 0.90


def test_saved_files_follow_the_umask(tmp_path):
    """safetensors alone leaves 0600 files; riskscope's writers give ordinary files (0666 & ~umask)."""
    import os
    import stat

    from riskscope._io import save_safetensors

    old = os.umask(0o022)
    try:
        vec = SteeringVector({1: torch.ones(4)})
        p = vec.save(tmp_path / "v")
        q = save_safetensors({"x": np.zeros(3, dtype=np.float32)}, tmp_path / "a.safetensors")
        modes = {stat.S_IMODE(os.stat(f).st_mode) for f in (p, q)}
    finally:
        os.umask(old)
    assert modes == {0o644}
    assert not list(tmp_path.glob(".*.tmp"))
