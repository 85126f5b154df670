"""Bad model input fails with one clear ModelError naming the file (and field) and what to do.

Real files in tmp_path: fake, empty and cut GGUF files; model folders saved by transformers and then
damaged one way at a time. Device and dtype strings are checked before anything is read.
"""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
import transformers as tf

from riskscope.errors import ModelError, RiskscopeError
from riskscope.models import check_device, check_dtype, load_model

from conftest import TINY_CONFIGS

pytestmark = pytest.mark.usefixtures("one_thread", "private_home")

CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,!?' "


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """Weight hashes and conversions go to a folder of the test's own, not the user's cache."""
    monkeypatch.setenv("RISKSCOPE_HOME", str(tmp_path / "home"))


def save_tiny_model(path, family: str = "llama", seed: int = 0):
    """A tiny random model plus a real (character-level) fast tokenizer, saved as transformers saves them."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(seed)
    tf.AutoModelForCausalLM.from_config(TINY_CONFIGS[family]()).save_pretrained(path)
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: 3 + i for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                               unk_token="<unk>").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "llama")


def _copy(tiny_dir, tmp_path, name="model"):
    return shutil.copytree(tiny_dir, tmp_path / name)


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def test_a_good_folder_loads(tiny_dir):
    lm = load_model(str(tiny_dir))
    assert lm.n_layers == 3 and lm.context_length == 64
    assert lm.tokenizer(["ab"])["input_ids"] == [[3, 4]]


# --- GGUF files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"hello, I am not a model", "is not a GGUF file"),
    (b"GGUF", "is truncated"),
    (b"GGUF" + struct.pack("<I", 99) + b"\0" * 16, "GGUF version 99"),
])
def test_bad_gguf_header_names_the_file(tmp_path, content, match):
    path = tmp_path / "weights.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=match) as info:
        load_model(str(path))
    assert str(path) in _one_line(info.value)
    assert not (tmp_path / "home" / "models").exists()  # nothing converted, nothing half-written


def test_gguf_with_a_good_header_and_nothing_behind_it_is_a_clear_error(tmp_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 5, 7))  # promises 5 tensors and 7 keys, holds none
    with pytest.raises(ModelError, match="not a readable GGUF model") as info:
        load_model(str(path))
    assert str(path) in _one_line(info.value) and "copy it again" in str(info.value)
    models = tmp_path / "home" / "models"
    assert not models.exists() or not any(models.iterdir())  # no half-converted folder left behind


# --- model folders -----------------------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="the model folder is empty; it needs config.json") as info:
        load_model(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in _one_line(info.value)


def _edit_config(path, edit):
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("damage,match", [
    (lambda p: (p / "config.json").write_text('{"model_type": "llama",\n  oops'), r"config\.json:2: invalid JSON"),
    (lambda p: (p / "config.json").write_text("[1, 2]"), "must hold a JSON object"),
    (lambda p: (p / "config.json").unlink(), r"config\.json is missing"),
    (lambda p: _edit_config(p, lambda c: c.pop("model_type")), "field 'model_type' is missing"),
    (lambda p: _edit_config(p, lambda c: c.update(model_type="weirdformer")),
     "field 'model_type' is 'weirdformer', an architecture transformers .* does not know"),
    (lambda p: _edit_config(p, lambda c: c.update(model_type="weirdformer", auto_map={"AutoConfig": "x.Y"})),
     "pass --trust-remote-code"),
    (lambda p: (p / "model.safetensors").unlink(), r"holds no weight files \(\*\.safetensors or \*\.bin\)"),
    (lambda p: (p / "tokenizer.json").unlink() or (p / "tokenizer_config.json").unlink(), "no tokenizer files"),
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:100]),
     "cannot load the model .*copy them again"),
])
def test_damaged_folder_names_the_file_and_field(tiny_dir, tmp_path, damage, match):
    path = _copy(tiny_dir, tmp_path)
    damage(path)
    with pytest.raises(ModelError, match=match) as info:
        load_model(str(path))
    assert str(path) in _one_line(info.value)


def test_a_file_that_is_not_gguf_and_a_missing_path(tiny_dir, tmp_path):
    with pytest.raises(ModelError, match="is a file but not a .gguf model; pass .* the folder"):
        load_model(str(tiny_dir / "model.safetensors"))
    with pytest.raises(ModelError, match="no such file or folder"):
        load_model(str(tmp_path / "nowhere" / "model"))


# --- device and dtype -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    (dict(device="tpu"), "unknown device 'tpu'; choose cpu, cuda, cuda:N, mps or auto"),
    (dict(device="cuda:x"), "unknown device 'cuda:x'"),
    (dict(dtype="float8"), "unknown dtype 'float8'; choose float32, bfloat16, float16 or auto"),
])
def test_bad_device_or_dtype_fails_before_anything_is_read(tmp_path, kwargs, match):
    # the model path does not exist: the device/dtype error must come first
    with pytest.raises(ModelError, match=match) as info:
        load_model(str(tmp_path / "missing.gguf"), **kwargs)
    _one_line(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ModelError, match=f"--device {device}: CUDA is not available.*use --device cpu"):
            load_model(str(tmp_path / "missing.gguf"), device=device)


def test_check_device_and_dtype_accept_the_valid_choices():
    assert check_device("cpu") == "cpu" and check_device("auto") == "auto"
    for d in ("float32", "bfloat16", "float16", "auto"):
        assert check_dtype(d) == d
    if torch.cuda.is_available():
        assert check_device("cuda") == "cuda"
        with pytest.raises(ModelError, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")
    assert issubclass(ModelError, RiskscopeError)
