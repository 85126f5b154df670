"""Quality checks for the built-in dataset cyber_risk_pairs; fast (a few seconds).

The rules and the lexical control live in scripts/build_dataset.py, shared with the datasheet
(docs/datasets/cyber_risk_pairs.md), so the figures there and the checks here are the same code.
"""

from __future__ import annotations

import collections
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

from riskscope.data import BUILTIN_VERSIONS, load_dataset

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_dataset", ROOT / "scripts" / "build_dataset.py")
bd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bd)

DATASHEET = ROOT / "docs" / "datasets" / "cyber_risk_pairs.md"

# The giveaway words the datasheet names, with inflections: every one must be caught by forbidden_words.txt.
ISSUE_WORDS = """risk risks risky risked danger dangerous endangered attack attacker attacked attacks hacker hacked
hacking malicious maliciously malware virus viruses threat threatened threatening suspicious suspiciously breach
breached exploit exploited exploits phishing phish phished scam scammer scammed unsafe vulnerable vulnerability
compromise compromised compromising""".split()


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return bd.load_pairs()


@pytest.fixture(scope="module")
def ds():
    return load_dataset("cyber_risk_pairs")


def test_loads_by_name_with_labels(ds, pairs):
    assert ds.name == "cyber_risk_pairs"
    assert len(ds) == 2 * len(pairs) and ds.n_pairs == len(pairs)
    for risky, benign, p in zip(ds.rows[0::2], ds.rows[1::2], pairs):
        assert (risky.id, risky.label, risky.text) == (f"{p['pair_id']}:risky", 1, p["risky"])
        assert (benign.id, benign.label, benign.text) == (f"{p['pair_id']}:benign", 0, p["benign"])
        assert risky.pair_id == benign.pair_id == p["pair_id"]
        assert risky.category == benign.category == p["category"]
        assert 1 <= risky.severity <= 5 and benign.severity == 0
        assert risky.split == benign.split == p["split"]


def test_version_and_hash_match_the_files(ds):
    # any edit of a built-in file must bump its version and record the new sha256 in BUILTIN_VERSIONS
    import hashlib

    for name, (version, digest) in BUILTIN_VERSIONS.items():
        raw = (ROOT / "src" / "riskscope" / "data" / "builtin" / f"{name}.jsonl").read_bytes()
        assert hashlib.sha256(raw).hexdigest() == digest, f"{name}: file changed; bump its version and hash"
        assert load_dataset(name).version == version
    assert ds.summary()["version"] == BUILTIN_VERSIONS["cyber_risk_pairs"][0]
    sheet = DATASHEET.read_text(encoding="utf-8")
    assert f"version {BUILTIN_VERSIONS['cyber_risk_pairs'][0]}" in sheet.lower()


def test_raw_schema(pairs):
    ids = [p["pair_id"] for p in pairs]
    assert len(set(ids)) == len(ids)
    for p in pairs:
        assert tuple(p) == bd.FIELDS, p["pair_id"]
        assert re.fullmatch(rf"{p['category']}-\d{{3}}", p["pair_id"])
        assert isinstance(p["severity"], int) and 1 <= p["severity"] <= 5
        assert p["risky_tone"] in bd.RISKY_TONES and p["benign_tone"] in bd.BENIGN_TONES
        assert p["setting"] and p["setting"] == p["setting"].strip().lower()
        assert p["split"] in ("train", "test")
    assert bd.rule_problems(pairs) == []


def test_counts_per_category(pairs):
    counts = collections.Counter(p["category"] for p in pairs)
    assert len(pairs) >= 768  # grown from 384 (version 1) when the learning curve still rose at 100 %
    assert set(counts) == set(bd.CATEGORIES) and len(counts) == 12
    assert min(counts.values()) >= 25, counts


def test_severity_spread(pairs):
    sev = collections.Counter(p["severity"] for p in pairs)
    assert set(sev) == {1, 2, 3, 4, 5}
    assert all(sev[s] / len(pairs) >= 0.05 for s in sev), sev


def test_forbidden_list_covers_the_issue_words():
    pats = bd.forbidden_patterns()
    assert len(pats) >= 16
    missed = [w for w in ISSUE_WORDS if not any(p.search(w) for p in pats)]
    assert not missed, f"forbidden_words.txt does not catch {missed}"
    # matched inside words and case-insensitively (compounds, sentence-initial capitals)
    assert any(p.search("The CYBERATTACKS began") for p in pats)


def test_no_forbidden_words(pairs):
    pats = bd.forbidden_patterns()
    hits = [(p["pair_id"], side, m.group(0)) for p in pairs for side in ("risky", "benign")
            for pat in pats for m in [pat.search(p[side])] if m]
    assert not hits


def test_length_and_sentences(pairs):
    for p in pairs:
        for side in ("risky", "benign"):
            t = p[side]
            assert 8 <= len(bd.words(t)) <= 35, (p["pair_id"], side)
            assert 1 <= bd.n_sentences(t) <= 2, (p["pair_id"], side)
            assert t.isascii() and "\n" not in t


def test_length_balance(pairs):
    r = np.array([len(bd.words(p["risky"])) for p in pairs])
    b = np.array([len(bd.words(p["benign"])) for p in pairs])
    assert 0.4 <= np.mean(r > b) <= 0.6
    assert np.mean(b == r) <= 0.15
    assert abs(r.mean() - b.mean()) < 1.0


def test_tone_controls(pairs):
    calm = np.mean([p["risky_tone"] == "calm" for p in pairs])
    negative = np.mean([p["benign_tone"] == "negative" for p in pairs])
    assert 0.25 <= calm <= 0.42, calm
    assert 0.25 <= negative <= 0.42, negative


def test_settings_vary(pairs):
    settings = collections.Counter(p["setting"] for p in pairs)
    assert len(settings) >= 60
    assert settings.most_common(1)[0][1] / len(pairs) <= 0.06
    for cat in bd.CATEGORIES:
        per = collections.Counter(p["setting"] for p in pairs if p["category"] == cat)
        assert per.most_common(1)[0][1] <= 0.2 * sum(per.values()), (cat, per.most_common(2))


def test_members_of_a_pair_share_wording(pairs):
    # Measured on the data (docs/datasets/cyber_risk_pairs.md, Similarity): within-pair token Jaccard
    # min 0.25, median 0.54; across pairs the highest Jaccard is 0.36. The floors stay above what two
    # unrelated sentences share.
    jac = np.array([bd.jaccard(p["risky"], p["benign"]) for p in pairs])
    shared = np.array([bd.shared_ratio(p["risky"], p["benign"]) for p in pairs])
    low = [p["pair_id"] for p, j, s in zip(pairs, jac, shared) if j < 0.25 or s < 0.40]
    assert not low, low
    assert np.median(jac) >= 0.45


def test_each_text_is_closest_to_its_own_partner(pairs):
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t for p in pairs for t in (p["risky"], p["benign"])]
    x = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts)
    cos = (x @ x.T).toarray()
    np.fill_diagonal(cos, -1)
    partner = np.arange(len(texts)) ^ 1
    assert np.mean(cos.argmax(axis=1) == partner) >= 0.98


def test_different_pairs_do_not_share_wording(pairs):
    sim = bd.cross_pair_similarity(pairs)
    assert sim["max_cosine"] < 0.5, sim          # near-duplicate threshold of the issue is 0.8
    assert sim["max_jaccard"] < 0.5, sim


def test_no_duplicate_texts(pairs):
    keys = [" ".join(re.findall(r"[a-z0-9]+", t.lower())) for p in pairs for t in (p["risky"], p["benign"])]
    assert len(set(keys)) == len(keys)


def test_split_by_pair_stratified_and_fixed(ds, pairs):
    per_pair: dict[str, set] = collections.defaultdict(set)
    for r in ds.rows:
        per_pair[r.pair_id].add(r.split)
    assert all(len(s) == 1 for s in per_pair.values())
    for cat in bd.CATEGORIES:
        members = [p for p in pairs if p["category"] == cat]
        frac = np.mean([p["split"] == "test" for p in members])
        assert 0.15 <= frac <= 0.25, (cat, frac)
    total = np.mean([p["split"] == "test" for p in pairs])
    assert 0.17 <= total <= 0.23
    again = [dict(p) for p in pairs]
    bd.assign_split(again)
    assert [p["split"] for p in again] == [p["split"] for p in pairs], "split is not the seeded one"


def test_lexical_control(pairs):
    res = bd.lexical_control(pairs)
    assert res["auc"] <= bd.LEXICAL_MAX_AUC, res["auc"]
    for C in (0.1, 10.0, 100.0):  # and not just for the reported C
        assert bd.lexical_control(pairs, C=C)["auc"] <= bd.LEXICAL_MAX_AUC, C
    # the datasheet reports the figures this code computes
    sheet = DATASHEET.read_text(encoding="utf-8")
    assert f"{res['auc']:.3f}" in sheet and f"{res['pair_accuracy']:.3f}" in sheet
    assert f"{len(pairs)} pairs" in sheet
