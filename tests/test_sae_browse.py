"""The feature browser's data and page: invariants on a tiny model, escaping, the CLI's bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from conftest import make_tiny
from riskscope.cli import main
from riskscope.data import load_dataset
from riskscope.hooks import HookPoint
from riskscope.report import sae_page_html, write_sae_page
from riskscope.sae import SparseAutoencoder, browser_data, logit_effects, save_saelens, text_windows


@pytest.fixture(scope="module")
def tiny_browser():
    torch.set_num_threads(1)
    lm = make_tiny("llama")
    sae = SparseAutoencoder(32, 96, "topk", k=6, seed=2).requires_grad_(False)
    windows = text_windows(lm, load_dataset("cyber_risk_pairs").limit(10).texts)
    return lm, sae, windows, browser_data(lm, sae, HookPoint("resid_post", 1), windows, contexts=4, radius=5)


def test_browser_data_invariants(tiny_browser):
    _, _, windows, data = tiny_browser
    assert len(data["features"]) == 96 and data["tokens_read"] == sum(len(w.ids) - w.skip for w in windows)
    assert sum(f["fires"] for f in data["features"]) == 6 * data["tokens_read"]  # TopK: exactly k per token
    for f in data["features"]:
        assert sum(f["hist"]) == f["fires"]
        maxes = [c["max"] for c in f["contexts"]]
        assert maxes == sorted(maxes, reverse=True) and len(maxes) <= 4
        if maxes:
            assert maxes[0] == pytest.approx(f["max"], rel=1e-3)
            assert max(f["contexts"][0]["acts"]) == 99  # the peak token of the best context is the max
        for c in f["contexts"]:
            assert len(c["tokens"]) == len(c["acts"]) <= 11 and all(str(t) in data["vocab"] for t in c["tokens"])


def test_logit_effects_match_the_dense_product(tiny_browser):
    lm, sae, _, _ = tiny_browser
    _, up_v, _, dn_v = logit_effects(lm, sae, top=3, chunk=7)
    gain = lm.layout.final_norm(torch.ones(1, lm.d_model))[0]
    full = (sae.W_dec * gain) @ lm.layout.unembed.weight.T
    np.testing.assert_allclose(up_v, full.topk(3, -1).values.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dn_v, (-full).topk(3, -1).values.neg().numpy(), rtol=1e-4, atol=1e-5)


def test_page_escapes_token_text_inside_the_script(tmp_path, tiny_browser):
    _, sae, _, data = tiny_browser
    data = json.loads(json.dumps(data))
    data["vocab"][next(iter(data["vocab"]))] = "</script><script>alert(1)</script>&"
    save_saelens(sae, tmp_path / "s", {"hook_name": "blocks.1.hook_resid_post"})
    html = sae_page_html(tmp_path / "s", data)
    assert html.count("</script>") == 2 and "alert(1)" in html  # the data's one is escaped, not closed
    blob = re.search(r'<script type="application/json" id="sae-data">(.*?)</script>', html, re.S).group(1)
    assert json.loads(blob)["vocab"] == data["vocab"]
    assert write_sae_page(tmp_path / "s", data).name == "browser.html"


def test_page_without_browser_data_has_no_script(tmp_path):
    save_saelens(SparseAutoencoder(8, 16, "relu"), tmp_path / "s", {"hook_name": "blocks.0.hook_resid_post"})
    assert "<script" not in sae_page_html(tmp_path / "s")


@pytest.mark.parametrize("args,match", [(["--tokens", "-1"], "--tokens"), (["--contexts", "0"], "--contexts")])
def test_cli_browse_bad_input_is_one_line_and_writes_nothing(tmp_path, args, match, capsys):
    save_saelens(SparseAutoencoder(32, 64, "topk", k=4), tmp_path / "s", {"hook_name": "blocks.1.hook_resid_post"})
    code, text = _cli(["sae", "browse", str(tmp_path / "s"), *args], capsys)
    assert code == 2 and match in text and "Traceback" not in text
    assert not (tmp_path / "s" / "browser.html").exists()


def _cli(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    got = capsys.readouterr()
    return e.value.code, got.out + got.err
