"""Dataset files: both layouts in JSONL and CSV, the built-in, and every validation error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from riskscope.data import BUILTINS, DEFAULT_DATASET, Dataset, Row, list_builtins, load_dataset
from riskscope.errors import DatasetError, RiskscopeError


def _jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return str(path)


ROWS = [
    {"id": "a", "text": "Pasted the password into the ticket.", "label": 1, "pair_id": "p1", "category": "creds",
     "severity": 4, "split": "train"},
    {"id": "b", "text": "Pasted the ticket number into the chat.", "label": 0, "pair_id": "p1", "category": "creds"},
    {"id": "c", "text": "A text without a pair.", "label": "risky"},
]
PAIRS = [
    {"pair_id": "p1", "category": "web", "severity": 3, "risky": "Disabled CSRF checks.", "benign": "Enabled CSRF checks."},
    {"pair_id": "p2", "risky": "Shared the root key.", "benign": "Shared the public key.", "split": "test"},
]


# --- loading --------------------------------------------------------------------------------------------


def test_row_per_text_jsonl(tmp_path):
    data = load_dataset(_jsonl(tmp_path / "rows.jsonl", ROWS))
    assert data.name == "rows" and len(data) == 3
    assert data.ids == ["a", "b", "c"]
    assert data.labels.tolist() == [1, 0, 1] and data.labels.dtype == np.int64
    assert data.pair_ids == ["p1", "p1", None] and data.n_pairs == 1
    assert data.rows[0] == Row("a", ROWS[0]["text"], 1, "p1", "creds", 4, "train")
    assert data.rows[2].category is None and data.rows[2].severity is None


def test_pair_per_row_jsonl(tmp_path):
    data = load_dataset(_jsonl(tmp_path / "pairs.jsonl", PAIRS))
    assert data.ids == ["p1:risky", "p1:benign", "p2:risky", "p2:benign"]
    assert data.texts == ["Disabled CSRF checks.", "Enabled CSRF checks.", "Shared the root key.",
                          "Shared the public key."]
    assert data.labels.tolist() == [1, 0, 1, 0]
    assert data.pair_ids == ["p1", "p1", "p2", "p2"] and data.n_pairs == 2
    assert [r.severity for r in data] == [3, 0, None, None]
    assert [r.category for r in data] == ["web", "web", None, None]
    assert [r.split for r in data] == [None, None, "test", "test"]


def test_csv_layouts_match_jsonl(tmp_path):
    rows_csv = tmp_path / "rows.csv"
    rows_csv.write_text(
        "id,text,label,pair_id,category,severity,split\n"
        f"a,{ROWS[0]['text']},1,p1,creds,4,train\n"
        f"b,{ROWS[1]['text']},0,p1,creds,,\n"
        f"c,{ROWS[2]['text']},risky,,,,\n"
    )
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text(
        "pair_id,category,severity,risky,benign,split\n"
        'p1,web,3,Disabled CSRF checks.,"Enabled CSRF checks.",\n'
        "p2,,,Shared the root key.,Shared the public key.,test\n"
    )
    for csv_path, records in ((rows_csv, ROWS), (pairs_csv, PAIRS)):
        from_csv = load_dataset(str(csv_path))
        from_jsonl = load_dataset(_jsonl(csv_path.with_suffix(".jsonl"), records))
        assert from_csv.rows == from_jsonl.rows
        assert from_csv.digest() == from_jsonl.digest()  # the digest is of the data, not the file


@pytest.mark.parametrize("raw,label", [(1, 1), (0, 0), ("1", 1), (True, 1), (False, 0), ("TRUE", 1), ("false", 0),
                                       ("risky", 1), ("Benign", 0), ("high", 1), (" low ", 0)])
def test_label_spellings(tmp_path, raw, label):
    data = load_dataset(_jsonl(tmp_path / "d.jsonl", [{"text": "some text", "label": raw}]))
    assert data.labels.tolist() == [label]


def test_builtin_loads_by_name():
    assert DEFAULT_DATASET in BUILTINS and DEFAULT_DATASET in list_builtins()
    data = load_dataset("cyber_risk_pairs")
    assert data.name == "cyber_risk_pairs"
    assert len(data) == 2 * data.n_pairs and data.n_pairs >= 100
    assert data.labels.sum() == data.n_pairs
    for risky, benign in zip(data.rows[0::2], data.rows[1::2]):
        assert risky.pair_id == benign.pair_id and (risky.label, benign.label) == (1, 0)
        assert risky.category == benign.category and risky.category
        assert risky.id == f"{risky.pair_id}:risky"
    summary = data.summary()
    assert summary["rows"] == len(data) and sum(summary["categories"].values()) == len(data)
    assert "-" not in summary["categories"] and len(summary["categories"]) > 1
    assert load_dataset().digest() == data.digest()  # the default, and stable across loads


def test_limit_keeps_the_first_pairs():
    data = load_dataset("cyber_risk_pairs")
    first = data.limit(5)
    assert len(first) == 10 and first.rows == data.rows[:10]
    assert first.pair_ids == [p for p in data.pair_ids[:10]]
    assert data.limit(None) is data
    assert data.limit(10 ** 6).rows == data.rows
    with pytest.raises(DatasetError, match="--limit"):
        data.limit(0)


def test_limit_keeps_pairs_whole_when_rows_interleave():
    rows = (Row("1", "a", 1, "x"), Row("2", "b", 1, "y"), Row("3", "c", 0, "x"), Row("4", "d", 0, "y"),
            Row("5", "e", 1, "z"), Row("6", "f", 0, "z"))
    assert Dataset("d", rows).limit(2).ids == ["1", "2", "3", "4"]
    unpaired = Dataset("u", tuple(Row(str(i), f"t{i}", i % 2) for i in range(6)))
    assert unpaired.limit(4).ids == ["0", "1", "2", "3"]


def test_digest_identifies_the_data(tmp_path):
    a = load_dataset(_jsonl(tmp_path / "a.jsonl", PAIRS))
    b = load_dataset(_jsonl(tmp_path / "b.jsonl", PAIRS))
    changed = load_dataset(_jsonl(tmp_path / "c.jsonl", [PAIRS[0], {**PAIRS[1], "risky": "Shared the root key!"}]))
    assert a.digest() == b.digest() != changed.digest()


# --- every validation error names file, line and field --------------------------------------------------

_OK = {"text": "fine text", "label": 1}
BAD_JSONL = {
    "invalid JSON": ([_OK, '{"text": "x", "label": 1'], 2, None, "invalid JSON"),
    "not an object": ([_OK, "[1, 2]"], 2, None, "JSON object"),
    "empty text": ([_OK, {"text": "   ", "label": 0}], 2, "text", "empty"),
    "missing text": ([_OK, {"label": 0}], 2, "text", "missing"),
    "text not a string": ([_OK, {"text": 5, "label": 0}], 2, "text", "not a string"),
    "unknown label": ([_OK, {"text": "other", "label": "maybe"}], 2, "label", "maybe"),
    "missing label": ([_OK, {"text": "other"}], 2, "label", "None"),
    "bad severity": ([_OK, {"text": "other", "label": 0, "severity": "high"}], 2, "severity", "integer"),
    "duplicate id": ([{**_OK, "id": "x"}, {"text": "other", "label": 0, "id": "x"}], 2, "id", "line 1"),
    "duplicate text": ([_OK, {"text": "  Fine   TEXT ", "label": 0}], 2, "text", "line 1"),
    "pair of one": ([{**_OK, "pair_id": "p"}, {"text": "b", "label": 0}], 1, "pair_id", "1 members"),
    "pair of three": ([{**_OK, "pair_id": "p"}, {"text": "b", "label": 0, "pair_id": "p"},
                       {"text": "c", "label": 0, "pair_id": "p"}], 3, "pair_id", "3 members"),
    "pair with equal labels": ([{**_OK, "pair_id": "p"}, {"text": "b", "label": "risky", "pair_id": "p"}],
                               2, "label", "both members"),
    "pair row missing benign": ([{"pair_id": "p", "risky": "r"}], 1, "benign", "missing"),
    "pair row empty risky": ([{"pair_id": "p", "risky": "", "benign": "b"}], 1, "risky", "empty"),
    "pair row missing pair_id": ([{"risky": "r", "benign": "b"}], 1, "pair_id", "missing"),
    "duplicate pair_id": ([PAIRS[0], {**PAIRS[1], "pair_id": "p1"}], 2, "id", "duplicates"),
    "mixed layouts": ([PAIRS[0], _OK], 2, None, "mixes"),
    "mixed layouts, rows first": ([_OK, PAIRS[0]], 2, None, "mixes"),
}


@pytest.mark.parametrize("case", sorted(BAD_JSONL))
def test_jsonl_errors_name_file_line_field(tmp_path, case):
    records, line, field, words = BAD_JSONL[case]
    path = _jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DatasetError) as info:
        load_dataset(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    if field is not None:
        assert f"field '{field}'" in msg, msg
    assert words in msg, msg
    assert "\n" not in msg
    assert isinstance(info.value, (RiskscopeError, ValueError))


def test_blank_lines_still_count_in_line_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(json.dumps(_OK) + "\n\n   \n" + json.dumps({"text": "", "label": 0}) + "\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:4: field 'text' is empty")):
        load_dataset(str(path))


def test_csv_errors_name_the_csv_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("text,label\nfine text,1\n,0\nother,2\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: field 'text'")):
        load_dataset(str(path))
    path.write_text("text,label\nfine text,1\nother,2\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: field 'label'")):
        load_dataset(str(path))


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(_OK).encode() + b"\n" + '{"text": "caf\u00e9", "label": 0}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: not UTF-8")):
        load_dataset(str(path))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # a BOM does not shift the line
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: not UTF-8")):
        load_dataset(str(path))


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_OK).encode() + b"\n")
    assert load_dataset(str(path)).texts == ["fine text"]


def test_missing_empty_and_wrongly_named_files(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'nope.jsonl'}: no such dataset file")):
        load_dataset(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DatasetError, match="built-ins: cyber_risk_pairs"):
        load_dataset("cyber_risk_pears")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path / 'empty.jsonl'}: the dataset is empty")):
        load_dataset(str(tmp_path / "empty.jsonl"))
    (tmp_path / "data.txt").write_text("hello\n")
    with pytest.raises(DatasetError, match=r"data\.txt: dataset files must be \.jsonl or \.csv"):
        load_dataset(str(tmp_path / "data.txt"))


# --- hostile inputs: every one a DatasetError naming file:line(:field), never a traceback ----------------------


def test_csv_field_of_ten_megabytes_names_the_line(tmp_path):
    import csv

    path = tmp_path / "big.csv"
    path.write_text("text,label\nfine text,1\n\"" + "x" * 10_000_000 + "\",0\nlast one,1\n")
    limit = csv.field_size_limit()
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: a field holds more than 1,000,000 characters")):
        load_dataset(str(path))
    assert csv.field_size_limit() == limit  # the process-wide limit is put back


def test_csv_field_longer_than_the_csv_default_loads(tmp_path):
    import csv

    path = tmp_path / "long.csv"
    long = "word " * 100_000  # 500,000 characters: above csv's default field limit, below riskscope's text cap
    path.write_text(f"text,label\nfine text,1\n\"{long}\",0\n")
    limit = csv.field_size_limit()
    assert load_dataset(str(path)).texts == ["fine text", long]
    assert csv.field_size_limit() == limit


def test_text_longer_than_the_cap_names_the_line(tmp_path):
    from riskscope.data import MAX_TEXT_CHARS

    path = _jsonl(tmp_path / "d.jsonl", [_OK, {"text": "y" * (MAX_TEXT_CHARS + 1), "label": 0}])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: field 'text' has 1,000,001 characters, more than "
                                                     f"the 1,000,000")):
        load_dataset(path)
    ok = _jsonl(tmp_path / "ok.jsonl", [_OK, {"text": "y" * MAX_TEXT_CHARS, "label": 0}])
    assert len(load_dataset(ok).texts[1]) == MAX_TEXT_CHARS


@pytest.mark.parametrize("where", ["line", "field"])
def test_deeply_nested_json_names_the_line(tmp_path, where):
    deep = "[" * 100_000 + "]" * 100_000
    line = deep if where == "line" else '{"text": "x", "label": 1, "category": ' + deep + "}"
    path = _jsonl(tmp_path / "deep.jsonl", [_OK, line])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: JSON nested too deeply")):
        load_dataset(path)


def test_integer_too_long_for_python_names_the_line(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [_OK, '{"text": "x", "label": ' + "1" * 5000 + "}"])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: invalid JSON")):
        load_dataset(path)


@pytest.mark.parametrize("raw,want", [(3, 3), (3.0, 3), ("3", 3), ("3.0", 3), (" 4 ", 4), (0, 0), (-1, -1),
                                      (2.7, None), ("2.7", None), (True, None), (False, None), ("3e0", None),
                                      ("NaN", None), (float("inf"), None), (10 ** 30, None), ([3], None),
                                      ({"v": 3}, None), ("", None)])
def test_severity_must_be_an_integer(tmp_path, raw, want):
    rec = {"text": "other", "label": 0, "severity": raw}
    line = json.dumps(rec).replace('"NaN"', "NaN") if raw == "NaN" else json.dumps(rec)
    path = _jsonl(tmp_path / "d.jsonl", [_OK, line])
    if want is None and raw != "":
        with pytest.raises(DatasetError, match=re.escape(f"{path}:2: field 'severity' must be an integer, got ")):
            load_dataset(path)
    elif raw == "":
        with pytest.raises(DatasetError, match="field 'severity'"):
            load_dataset(path)
    else:
        assert load_dataset(path).rows[1].severity == want


def test_severity_in_csv_and_pair_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,severity\nfine text,1,4.0\nother,0,2.7\n")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:3: field 'severity' must be an integer, got '2.7'")):
        load_dataset(str(path))
    path.write_text("text,label,severity\nfine text,1,4.0\nother,0,\n")
    assert [r.severity for r in load_dataset(str(path))] == [4, None]
    pairs = _jsonl(tmp_path / "p.jsonl", [{**PAIRS[0], "severity": 2.7}])
    with pytest.raises(DatasetError, match=re.escape(f"{pairs}:1: field 'severity'")):
        load_dataset(pairs)


@pytest.mark.parametrize("raw,want", [(1.0, 1), (0.0, 0), ("1.0", 1), ("0", 0), (0.5, None), (2, None), ([1], None),
                                      ({"x": 1}, None), (None, None)])
def test_integral_float_labels(tmp_path, raw, want):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "some text", "label": raw}])
    if want is None:
        with pytest.raises(DatasetError, match=re.escape(f"{path}:1: field 'label' must be one of")):
            load_dataset(path)
    else:
        assert load_dataset(path).labels.tolist() == [want]


@pytest.mark.parametrize("field", ["id", "pair_id", "category", "split"])
def test_names_must_be_strings_or_numbers(tmp_path, field):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "some text", "label": 1, field: {"nested": [1, 2]}}])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:1: field '{field}' must be a string or a number, "
                                                     f"got a JSON object")):
        load_dataset(path)
    num = _jsonl(tmp_path / "n.jsonl", [{"text": "some text", "label": 1, field: 7.0},
                                        {"text": "other text", "label": 0, field: 7}])
    if field != "id":  # two rows with id 7 would be duplicates
        assert {getattr(r, field) for r in load_dataset(num)} == {"7"}


def test_line_separators_inside_json_strings_are_text(tmp_path):
    path = tmp_path / "seps.jsonl"
    path.write_text(json.dumps({"text": "one\u2028two\x85three\x1cfour", "label": 1}, ensure_ascii=False) + "\n"
                    + json.dumps({"text": "", "label": 0}) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: field 'text' is empty")):
        load_dataset(str(path))
    path.write_text(path.read_text(encoding="utf-8").split("\n")[0] + "\n", encoding="utf-8")
    assert load_dataset(str(path)).texts == ["one\u2028two\x85three\x1cfour"]


def test_unpaired_surrogate_names_the_field(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [_OK, '{"text": "bad \\ud800 text", "label": 0}'])
    with pytest.raises(DatasetError, match=re.escape(f"{path}:2: field 'text' holds an unpaired surrogate")):
        load_dataset(path)


def test_iter_jsonl_hostile_lines():
    from riskscope._io import iter_jsonl

    with pytest.raises(RiskscopeError, match=r"^f.jsonl:3: JSON nested too deeply$"):
        list(iter_jsonl('{}\n\n' + "[" * 50_000 + "]" * 50_000, "f.jsonl", objects=False))
    with pytest.raises(RiskscopeError, match=r"^f.jsonl:1: invalid JSON \(Exceeds the limit"):
        list(iter_jsonl("9" * 5000, "f.jsonl", objects=False))
    assert list(iter_jsonl('{"a": "x\u2028y"}\r\n{"b": 1}', "f.jsonl")) == [(1, {"a": "x\u2028y"}), (2, {"b": 1})]


# --- check_text_lengths: refuse what cannot fit without tokenising it ------------------------------------


def real_tokenizer():
    """A real byte-level BPE tokenizer (HF ``tokenizers``), trained here on a few lines: offline and fast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<eos>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [r.text for r in load_dataset("cyber_risk_pairs").rows[:200]]
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def test_check_text_lengths_refuses_without_tokenising(monkeypatch):
    from riskscope.data import check_text_lengths, max_token_chars

    tok = real_tokenizer()
    longest = max_token_chars(tok)
    assert longest == max(len(t) for t in tok.get_vocab()) > 1
    fits = "a short text"
    too_long = "risky " * (64 * longest // 6 + 10)  # more characters than 64 tokens can span
    assert len(tok(too_long)["input_ids"]) > 64  # the bound is sound here

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised")

    monkeypatch.setattr(type(tok), "__call__", no_tokenising)
    check_text_lengths(tok, [fits, "x" * (64 * longest)], 64, "d.jsonl")  # might fit: left to the tokenizer
    with pytest.raises(DatasetError, match=rf"^d.jsonl: row 2 \(id 'b'\) has {len(too_long):,} characters, so at "
                                           rf"least \d+ tokens .* more than the model context of 64; shorten it$"):
        check_text_lengths(tok, [fits, too_long], 64, "d.jsonl", ids=["a", "b"])
    data = Dataset("d", (Row("x1", fits, 0), Row("x2", too_long, 1)))
    with pytest.raises(DatasetError, match=r"^data: row 2 \(id 'x2'\)"):
        check_text_lengths(tok, data, 64, "data")


def test_check_text_lengths_passes_tokenizers_without_a_vocabulary():
    from riskscope.data import check_text_lengths, max_token_chars

    from conftest import TinyTokenizer

    assert max_token_chars(TinyTokenizer()) is None
    check_text_lengths(TinyTokenizer(), ["x" * 10_000], 64, "d")
