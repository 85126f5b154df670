"""Sparse autoencoders: learning a known dictionary, formats, resumption, metrics, bad input (fast tier)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_tiny
from riskscope.data import CacheConfig, Dataset, cache_activations, load_dataset
from riskscope.errors import RiskscopeError
from riskscope.hooks import HookPoint
from riskscope.sae import (
    SAEConfig, SAERunConfig, SparseAutoencoder, StoreSource, load_corpus, load_sae, reconstruction_metrics,
    save_saelens, save_sparsify, train_sae, train_sae_on,
)

ROOT = Path(__file__).resolve().parents[1]


class SyntheticSource:
    """Activations made of k of ``n_feat`` known unit directions with positive coefficients, plus an offset."""

    def __init__(self, d: int = 24, n_feat: int = 48, k: int = 3, block: int = 2048, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.dict_FD = torch.randn(n_feat, d, generator=g)
        self.dict_FD /= self.dict_FD.norm(dim=1, keepdim=True)
        self.d_in, self.n_feat, self.k, self.block, self.seed = d, n_feat, k, block, seed
        self.reads = 0

    def block_acts(self, b: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + b)
        idx = torch.rand(self.block, self.n_feat, generator=g).topk(self.k, -1).indices
        coef = torch.zeros(self.block, self.n_feat).scatter_(1, idx, torch.rand(self.block, self.k, generator=g) + 0.5)
        return coef @ self.dict_FD * 3 + 0.5

    def blocks(self, start: int = 0):
        b = start
        while True:
            self.reads += 1
            yield b, self.block_acts(b)
            b += 1


def _mmcs(W_FD: torch.Tensor, dict_FD: torch.Tensor) -> float:
    """Mean over true directions of the best cosine with any decoder row."""
    W = W_FD.detach() / W_FD.detach().norm(dim=1, keepdim=True)
    return float((dict_FD @ W.T).max(1).values.mean())


def _cfg(arch: str, **kw) -> SAEConfig:
    base = dict(d_in=24, expansion=2, arch=arch, k=3, batch_size=256, tokens=40_960, lr=3e-3, l1_coefficient=0.3,
                block_tokens=2048, aux_dead_tokens=8192)
    base.update(kw)
    return SAEConfig(**base)


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "relu"])
def test_each_arch_learns_a_known_sparse_dictionary(arch, one_thread):
    src = SyntheticSource()
    res = train_sae_on(src, _cfg(arch))
    x = src.block_acts(10_000)
    out = res.sae(x)
    fvu = reconstruction_metrics(x, out.recon_ND)["fvu"]
    chance = SparseAutoencoder(24, 48, "topk", 3, seed=5).W_dec
    assert fvu < 0.3
    assert _mmcs(res.sae.W_dec, src.dict_FD) > _mmcs(chance, src.dict_FD) + 0.3
    assert res.tokens == 40_960 and res.steps == 160


def test_topk_l0_is_exactly_k(one_thread):
    sae = SparseAutoencoder(16, 64, "topk", k=5, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(10.0)  # every pre-activation positive: exactly k survive
    acts = sae.encode(torch.randn(100, 16))
    assert torch.equal((acts > 0).sum(1), torch.full((100,), 5))


def test_sparse_training_gradients_match_dense_autograd():
    torch.manual_seed(0)
    sae = SparseAutoencoder(12, 40, "topk", k=4, seed=1)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    x = torch.randn(30, 12)
    dead = torch.zeros(40, dtype=torch.bool)
    dead[::3] = True
    out = sae.train_step(x, dead_F=dead, aux_k=6, aux_coefficient=0.5)
    out.loss.backward()
    sparse = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad()
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    v, i = pre.topk(4, -1)
    recon = torch.zeros_like(pre).scatter(-1, i, v.relu()) @ sae.W_dec + sae.b_dec
    av, ai = pre.masked_fill(~dead[None], float("-inf")).topk(6, -1)
    e_hat = torch.zeros_like(pre).scatter(-1, ai, av.relu()) @ sae.W_dec
    aux = (e_hat - (x - recon).detach()).pow(2).sum(-1).mean()
    ((recon - x).pow(2).sum(-1).mean() + 0.5 * aux).backward()
    for n, p in sae.named_parameters():
        torch.testing.assert_close(sparse[n], p.grad, atol=1e-4, rtol=1e-4)


def test_training_is_deterministic_for_a_seed(one_thread):
    a = train_sae_on(SyntheticSource(), _cfg("topk", tokens=10_240))
    b = train_sae_on(SyntheticSource(), _cfg("topk", tokens=10_240))
    c = train_sae_on(SyntheticSource(), _cfg("topk", tokens=10_240, seed=1))
    assert torch.equal(a.sae.W_dec, b.sae.W_dec) and torch.equal(a.sae.b_enc, b.sae.b_enc)
    assert not torch.equal(a.sae.W_dec, c.sae.W_dec)


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path, arch, one_thread):
    cfg = _cfg(arch, tokens=20_480, checkpoint_every=4096, block_tokens=2048)
    full = train_sae_on(SyntheticSource(), cfg)

    def stop(p):
        if p.step == 50:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_sae_on(SyntheticSource(), cfg, tmp_path / "ck", progress=stop)
    assert (tmp_path / "ck" / "latest.json").is_file()
    src = SyntheticSource()
    resumed = train_sae_on(src, cfg, tmp_path / "ck")
    assert resumed.resumed_from_step is not None and 0 < resumed.resumed_from_step < cfg.steps
    for name in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
        assert torch.equal(getattr(full.sae, name), getattr(resumed.sae, name)), name
    assert torch.equal(full.dead_F, resumed.dead_F) and torch.equal(full.density_F, resumed.density_F)


def test_checkpoint_of_another_config_is_refused(tmp_path, one_thread):
    train_sae_on(SyntheticSource(), _cfg("topk", tokens=2048), tmp_path / "ck")
    with pytest.raises(RiskscopeError, match="another configuration"):
        train_sae_on(SyntheticSource(), _cfg("topk", tokens=2048, k=4), tmp_path / "ck")


def test_batchtopk_saves_as_jumprelu_that_equals_its_inference(tmp_path, one_thread):
    res = train_sae_on(SyntheticSource(), _cfg("batchtopk", tokens=10_240))
    assert float(res.sae.threshold[0]) > 0
    save_saelens(res.sae, tmp_path / "s", {"hook_name": "blocks.0.hook_resid_post"}, res.density_F)
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu"
    loaded, _ = load_sae(tmp_path / "s")
    x = SyntheticSource().block_acts(7)
    a, b = res.sae(x), loaded(x)
    torch.testing.assert_close(a.acts_NF, b.acts_NF, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.recon_ND, b.recon_ND, atol=1e-5, rtol=1e-5)
    l0 = float((a.acts_NF > 0).sum(1).float().mean())
    assert 0.5 * 3 < l0 < 2 * 3  # the threshold keeps about k latents per token


@pytest.mark.parametrize("arch", ["topk", "relu", "batchtopk"])
def test_saelens_folder_round_trip(tmp_path, arch):
    sae = SparseAutoencoder(10, 30, arch, k=4, seed=3)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
        sae.threshold.uniform_(0, 0.5)
    save_saelens(sae, tmp_path / "s", {"model_name": "m"}, torch.rand(30))
    loaded, cfg = load_sae(tmp_path / "s")
    assert loaded.arch == {"batchtopk": "jumprelu"}.get(arch, arch)
    x = torch.randn(50, 10)
    torch.testing.assert_close(sae(x).recon_ND, loaded(x).recon_ND)
    from safetensors.torch import load_file
    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (10, 30) and w["W_dec"].shape == (30, 10)
    assert load_file(str(tmp_path / "s" / "sparsity.safetensors"))["sparsity"].shape == (30,)


def test_sparsify_folder_round_trip_keeps_w_dec_orientation(tmp_path):
    sae = SparseAutoencoder(10, 30, "topk", k=4, seed=3)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    save_sparsify(sae, tmp_path / "sp")
    from safetensors.torch import load_file
    t = load_file(str(tmp_path / "sp" / "sae.safetensors"))
    assert t["encoder.weight"].shape == (30, 10) and t["W_dec"].shape == (30, 10)
    loaded, _ = load_sae(tmp_path / "sp")
    x = torch.randn(50, 10)
    torch.testing.assert_close(sae(x).acts_NF, loaded(x).acts_NF)
    torch.testing.assert_close(sae(x).recon_ND, loaded(x).recon_ND)
    # sparsify's own encoder, written out: relu(linear(x - b_dec)) then top-k; decode W_dec rows
    pre = torch.relu((x - t["b_dec"]) @ t["encoder.weight"].T + t["encoder.bias"])
    v, i = pre.topk(4, -1)
    recon = torch.zeros(50, 30).scatter(-1, i, v) @ t["W_dec"] + t["b_dec"]
    torch.testing.assert_close(loaded(x).recon_ND, recon, atol=1e-5, rtol=1e-5)


def test_saelens_loads_our_folder_and_agrees(tmp_path):
    sae_lens = pytest.importorskip("sae_lens", reason="sae-lens is an optional dependency (pip install sae-lens)")
    res = train_sae_on(SyntheticSource(), _cfg("topk", tokens=4096))
    for arch, model in (("topk", res.sae), ("jumprelu", train_sae_on(SyntheticSource(),
                                                                       _cfg("batchtopk", tokens=4096)).sae),
                        ("standard", train_sae_on(SyntheticSource(), _cfg("relu", tokens=4096)).sae)):
        folder = save_saelens(model, tmp_path / arch, {"model_name": "tiny", "hook_name": "blocks.0.hook_resid_post"})
        theirs = sae_lens.SAE.load_from_disk(str(folder), device="cpu")
        x = SyntheticSource().block_acts(3)[:200]
        with torch.no_grad():
            acts = theirs.encode(x)
            torch.testing.assert_close(acts, model.encode(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs.decode(acts), model.decode(model.encode(x)), atol=1e-5, rtol=1e-5)


def test_fvu_identities():
    x = torch.randn(500, 8) * 2 + 5
    assert reconstruction_metrics(x, x)["fvu"] == pytest.approx(0.0, abs=1e-12)
    assert reconstruction_metrics(x, x.mean(0).expand_as(x))["fvu"] == pytest.approx(1.0, abs=1e-9)
    m = reconstruction_metrics(x, x.mean(0).expand_as(x))
    assert m["fvu_about_zero"] < 0.2  # the about-zero formula flatters a mean-only reconstruction
    assert m["fvu_legacy"] == pytest.approx(1.0, abs=1e-6)


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    (dict(k=64), "must be smaller than d_sae"),
    (dict(expansion=0.5), "expansion must be >= 1"),
    (dict(lr=float("nan")), "finite"),
    (dict(arch="gated"), "unknown SAE architecture"),
    (dict(tokens=10), "at least one batch"),
])
def test_bad_config(kw, match):
    base = dict(d_in=32, expansion=2, k=8, batch_size=16)
    base.update(kw)
    with pytest.raises(RiskscopeError, match=match):
        SAEConfig(**base)


def test_corrupt_weights_and_unknown_architecture_are_one_line_errors(tmp_path):
    sae = SparseAutoencoder(8, 16, "topk", k=2)
    save_saelens(sae, tmp_path / "a")
    w = tmp_path / "a" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:-40])
    with pytest.raises(RiskscopeError, match="truncated or corrupt"):
        load_sae(tmp_path / "a")
    save_saelens(sae, tmp_path / "b")
    cfg = json.loads((tmp_path / "b" / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (tmp_path / "b" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(RiskscopeError, match="unknown architecture 'gated'"):
        load_sae(tmp_path / "b")


def test_empty_corpus_is_refused(tmp_path):
    (tmp_path / "e.txt").write_text("\n\n  \n")
    with pytest.raises(RiskscopeError, match="holds no text"):
        load_corpus(str(tmp_path / "e.txt")).check()
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(RiskscopeError, match="holds no text"):
        load_corpus(str(tmp_path / "e.jsonl")).check()


def test_corpus_formats(tmp_path):
    (tmp_path / "c.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert list(load_corpus(str(tmp_path / "c.jsonl")).texts()) == ["one", "two"]
    (tmp_path / "bad.jsonl").write_text('{"body": "one"}\n')
    with pytest.raises(RiskscopeError, match="bad.jsonl:1: field 'text'"):
        list(load_corpus(str(tmp_path / "bad.jsonl")).texts())
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"text": ["a b", "c d"]}), str(tmp_path / "c.parquet"))
    assert list(load_corpus(str(tmp_path / "c.parquet")).texts()) == ["a b", "c d"]


# --- end to end on a tiny model ----------------------------------------------------------------


def _text_file(tmp_path: Path) -> Path:
    words = "risk model layer token feature sparse code python data text value".split()
    docs = [" ".join(words[(i * 7 + j) % len(words)] for j in range(60)) for i in range(120)]
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(docs))
    return path


def test_train_sae_from_live_model_writes_saelens_folder_and_metrics(tmp_path, one_thread):
    lm = make_tiny("llama")
    cfg = SAEConfig(d_in=32, expansion=4, arch="topk", k=4, batch_size=256, tokens=4096, block_tokens=1024)
    run = SAERunConfig(point=HookPoint("resid_post", 1), corpus=str(_text_file(tmp_path)), context=32, holdout=6)
    res = train_sae(lm, cfg, run, tmp_path / "out")
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["held_out"]["l0"] == pytest.approx(4.0)
    for key in ("fvu", "fvu_legacy", "fvu_about_zero"):
        assert 0 <= m["held_out"][key] < 2
    s = m["splice"]
    for key in ("ce_clean", "ce_sae", "ce_zero_ablation", "ce_mean_ablation", "kl_sae", "kl_zero_ablation"):
        assert s[key] is not None and s[key] >= 0
    assert m["random_init"]["held_out"]["l0"] == pytest.approx(4.0)
    assert m["random_init"]["splice"]["ce_clean"] != pytest.approx(s["ce_clean"])  # another model
    cfg_json = json.loads((tmp_path / "out" / "cfg.json").read_text())
    assert cfg_json["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg_json["d_sae"] == 128
    loaded, _ = load_sae(tmp_path / "out")
    x = torch.randn(20, 32)
    torch.testing.assert_close(loaded(x).recon_ND, res.sae(x).recon_ND)


def test_capture_dtype_trains_on_a_cast_copy_and_reports_both_held_out_fvus(tmp_path, one_thread):
    lm = make_tiny("llama")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    cfg = SAEConfig(d_in=32, expansion=4, arch="topk", k=4, batch_size=256, tokens=2048, block_tokens=1024)
    run = SAERunConfig(point=HookPoint("resid_post", 1), corpus=str(_text_file(tmp_path)), context=32, holdout=6,
                       capture_dtype="bfloat16")
    m = train_sae(lm, cfg, run, tmp_path / "out").metrics
    assert lm.model.dtype == torch.float32  # the caller's model is not cast
    for k, v in lm.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert m["model_dtype"] == "float32" and m["capture_dtype"] == "bfloat16"
    fp32, bf16 = m["held_out"], m["held_out_capture_dtype"]
    assert fp32["tokens"] == bf16["tokens"] and bf16["l0"] == pytest.approx(4.0)
    assert fp32["fvu"] != bf16["fvu"]  # other activations, same tokens
    assert m["random_init"]["capture_dtype"] == "bfloat16" and m["random_init"]["held_out_capture_dtype"]
    t = m["timing"]
    assert t["seconds"] >= t["train_seconds"] >= t["activations_seconds"] > 0 and t["eval_seconds"] > 0
    with pytest.raises(RiskscopeError, match="capture_dtype"):
        SAERunConfig(point=HookPoint("resid_post", 1), capture_dtype="int8")


def _store(tmp_path: Path, lm, positions="all") -> Path:
    data = load_dataset("cyber_risk_pairs").limit(12)
    cfg = CacheConfig(points=(HookPoint("resid_post", 1),), positions=positions, chunk_rows=8, truncate=True)
    cache_activations(lm, data, tmp_path / "store", cfg)
    return tmp_path / "store"


def test_store_source_streams_chunks_and_holds_rows_out(tmp_path, one_thread):
    from riskscope.data import Store
    lm = make_tiny("llama")
    store = Store.open(_store(tmp_path, lm))
    src = StoreSource(store, "resid_post.1", holdout_every=5)
    n_train = sum(r["n_tokens"] for r in store.rows if r["index"] % 5)
    got = [b for _, b in zip(range(src.n_chunks), src.blocks())]
    assert sum(b.shape[0] for _, b in got) == n_train
    res = train_sae(lm, SAEConfig(d_in=32, expansion=2, k=4, batch_size=128, tokens=1024, block_tokens=1024),
                    SAERunConfig(point=HookPoint("resid_post", 1), store=str(store.root), context=32,
                                 random_baseline=False), tmp_path / "out")
    assert res.metrics["source"]["kind"] == "store" and res.metrics["held_out"]["tokens"] > 0


def test_store_without_the_point_or_positions_is_refused(tmp_path):
    from riskscope.data import Store
    lm = make_tiny("llama")
    store = Store.open(_store(tmp_path, lm))
    with pytest.raises(RiskscopeError, match="has no point resid_post.2"):
        StoreSource(store, "resid_post.2")
    last = _store(tmp_path / "l", lm, positions="last")
    with pytest.raises(RiskscopeError, match="needs every token"):
        StoreSource(Store.open(last), "resid_post.1")


def test_out_folder_that_is_not_ours_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    lm = make_tiny("llama")
    with pytest.raises(RiskscopeError, match="not an SAE folder riskscope wrote"):
        train_sae(lm, SAEConfig(d_in=32, k=4), SAERunConfig(point=HookPoint("resid_post", 1)), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_sae_whose_width_differs_from_the_model_is_refused(tmp_path):
    from riskscope.sae import check_sae_width
    sae = SparseAutoencoder(16, 32, "topk", k=2)
    with pytest.raises(RiskscopeError, match="16-wide"):
        check_sae_width(sae, 32, "resid_post.1 of tiny-llama")


@pytest.mark.parametrize("args,match", [
    (["--expansion", "0.5"], "expansion must be >= 1"),
    (["--k", "100000"], "must be smaller than d_sae"),
    (["--corpus", "EMPTY"], "holds no text"),
    (["--store", "STORE", "--layer", "2"], "has no point resid_post.2"),
    (["--capture-dtype", "int8"], "capture_dtype must be one of"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, match):
    (tmp_path / "empty.txt").write_text("")
    lm = make_tiny("llama")
    store = _store(tmp_path, lm) if "STORE" in args else None
    args = [str(tmp_path / "empty.txt") if a == "EMPTY" else str(store) if a == "STORE" else a for a in args]
    if "--k" in args:  # needs d_in, which a store gives without loading a model
        store = _store(tmp_path, lm)
        args += ["--store", str(store), "--layer", "1"]
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "riskscope.cli", "sae", "train", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert match in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_pydocs_corpus_is_varied_and_large():
    c = load_corpus("pydocs")
    texts, chars = [], 0
    for t in c.texts():
        texts.append(t)
        chars += len(t)
        if len(texts) >= 200:
            break
    assert any(t.lstrip().startswith(("#", "import", "from", '"""', "r\"\"\"")) or "def " in t for t in texts)
    assert any(". " in t and "def " not in t for t in texts)  # prose
    assert c.describe()["versions"]["python"]
