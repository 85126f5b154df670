"""Texts are checked once, in riskscope.hooks, below every scorer: empty and whitespace-only texts are
errors naming their index; a text longer than the model's context is an error naming its index and
token count, or is cut to the context with ``truncate=True`` and reported."""

from __future__ import annotations

import numpy as np
import pytest

from riskscope.errors import RiskscopeError
from riskscope.hooks import (HookPoint, capture_texts, check_texts, check_token_ids, iter_captures, run_texts,
                             tokenize)
from riskscope.probes import LogisticProbe, Probe

from conftest import make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

POINT = HookPoint("resid_post", 1)


@pytest.fixture(scope="module")
def lm():
    return make_tiny("llama")  # context 64 tokens, one token per character


def _probe(lm) -> Probe:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, lm.d_model))
    est = LogisticProbe(C=1.0).fit(X, (X[:, 0] > 0).astype(int))
    return Probe(estimator=est, hook="resid_post", layer=1, model_id=lm.model_id, weight_hash=lm.weight_hash)


@pytest.mark.parametrize("bad", ["", "   ", "\n\t "])
def test_empty_or_whitespace_text_is_an_error_naming_its_index(lm, bad):
    texts = ["a fine text", "another one", bad]
    for call in (lambda: capture_texts(lm, texts, [POINT]), lambda: run_texts(lm, texts),
                 lambda: _probe(lm).score(texts, lm=lm)):
        with pytest.raises(RiskscopeError, match="text at index 2 is empty or only whitespace"):
            call()


def test_too_long_text_is_an_error_naming_index_and_token_count(lm):
    long = "x" * 100  # 100 tokens against a context of 64
    with pytest.raises(RiskscopeError, match="text at index 1 has 100 tokens, more than the model's context of 64"):
        capture_texts(lm, ["short", long], [POINT])
    with pytest.raises(RiskscopeError, match="text at index 0 has 100 tokens"):
        _probe(lm).score([long], lm=lm)
    with pytest.raises(RiskscopeError, match="text at index 0 has 100 tokens"):
        run_texts(lm, [long])


def test_truncate_cuts_to_the_context_and_says_which(lm):
    texts = ["short", "ab" * 50, "c" * 64, "de" * 40]
    got = capture_texts(lm, texts, [POINT], truncate=True)
    assert got.truncated == (1, 3)
    assert got.n_tokens == (5, 100, 64, 80)
    # a cut text gives exactly the features of its first 64 tokens
    cut = capture_texts(lm, ["short", ("ab" * 50)[:64], "c" * 64, ("de" * 40)[:64]], [POINT])
    assert cut.truncated == ()
    np.testing.assert_array_equal(got[POINT], cut[POINT])


def test_texts_that_fit_are_unchanged_by_truncate(lm):
    texts = ["one text", "and a second, longer text"]
    plain, cut = capture_texts(lm, texts, [POINT]), capture_texts(lm, texts, [POINT], truncate=True)
    assert plain.truncated == cut.truncated == ()
    np.testing.assert_array_equal(plain[POINT], cut[POINT])
    checked = check_texts(lm, texts)
    assert checked.ids == tokenize(lm, texts) and checked.n_tokens == tuple(len(t) for t in texts)


def test_not_a_list_of_strings(lm):
    with pytest.raises(RiskscopeError, match="a single string; wrap it in a list"):
        capture_texts(lm, "one text", [POINT])
    with pytest.raises(RiskscopeError, match="text at index 1 is a int, not a string"):
        check_texts(lm, ["ok", 3])
    with pytest.raises(RiskscopeError, match="no texts to capture"):
        capture_texts(lm, [], [POINT])
    with pytest.raises(RiskscopeError, match="no texts to run"):
        run_texts(lm, [])
    assert len(_probe(lm).score([], lm=lm)) == 0  # scoring nothing is still fine


def test_iter_captures_checks_rows_before_the_first_forward(lm):
    ids = [[3, 4, 5], [], [6] * 80]
    with pytest.raises(RiskscopeError, match="row at index 1 has no tokens"):
        next(iter_captures(lm, ids, [0, 1], [POINT], "last", 8))
    with pytest.raises(RiskscopeError, match="row at index 2 has 80 tokens"):
        next(iter_captures(lm, ids, [2, 0], [POINT], "last", 8))
    rows, _, got = next(iter_captures(lm, ids, [0], [POINT], "last", 8))
    assert rows.tolist() == [0] and got[POINT].shape == (1, lm.d_model)
    with pytest.raises(RiskscopeError, match="row at index 0 has no tokens"):
        check_token_ids(lm, [[]], what="row")
