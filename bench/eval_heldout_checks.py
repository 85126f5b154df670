"""Checks and figures of the external set ``cyber_risk_heldout`` (docs/datasets/cyber_risk_heldout.md).

The datasheet's figures and tests/test_evaluate.py come from these functions:

* :func:`rule_problems` - the writing rules of cyber_risk_pairs (forbidden words, 8-35 words, ASCII, one
  or two sentences, members of a pair sharing wording);
* :func:`overlap` - how close each held-out text comes to any built-in text (token Jaccard, TF-IDF cosine);
* :func:`lexical_transfer` - TF-IDF trained on cyber_risk_pairs scoring the held-out set (the same
  features and C as the built-in datasheet's lexical control).

    python bench/eval_heldout_checks.py      # prints every figure of the datasheet
"""

from __future__ import annotations

import collections
import json
import re
from importlib import resources

import numpy as np

TOKEN = re.compile(r"[a-z0-9']+")


def load(name: str) -> list[dict]:
    """The raw pair records of a built-in dataset file (one pair per line)."""
    text = resources.files("riskscope.data").joinpath("builtin", f"{name}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def forbidden() -> list[re.Pattern]:
    text = resources.files("riskscope.data").joinpath("builtin", "forbidden_words.txt").read_text(encoding="utf-8")
    return [re.compile(line.strip(), re.I) for line in text.splitlines() if line.strip() and not line.startswith("#")]


def tokens(text: str) -> set[str]:
    return set(TOKEN.findall(text.lower()))


def jaccard(a: str, b: str) -> float:
    x, y = tokens(a), tokens(b)
    return len(x & y) / len(x | y)


def rule_problems(pairs: list[dict]) -> list[str]:
    """Every broken writing rule, as ``pair_id: problem`` (empty when the set follows the rules)."""
    pats, out = forbidden(), []
    for p in pairs:
        for side in ("risky", "benign"):
            t = p[side]
            out += [f"{p['pair_id']}: {side} matches forbidden {pat.pattern!r}" for pat in pats if pat.search(t)]
            if not 8 <= len(t.split()) <= 35:
                out.append(f"{p['pair_id']}: {side} has {len(t.split())} words")
            if not t.isascii():
                out.append(f"{p['pair_id']}: {side} is not ASCII")
            if not 1 <= len(re.findall(r"[.!?](\s|$)", t)) <= 2:
                out.append(f"{p['pair_id']}: {side} is not one or two sentences")
        if jaccard(p["risky"], p["benign"]) < 0.25:
            out.append(f"{p['pair_id']}: members share too little wording")
    return out


def overlap(heldout: list[dict], builtin: list[dict]) -> dict:
    """Nearest built-in text of every held-out text: the highest token Jaccard and TF-IDF (word 1-2 gram)
    cosine over all pairs, and the highest Jaccard between different held-out pairs."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    h = [(p["pair_id"], p[s]) for p in heldout for s in ("risky", "benign")]
    b = [(p["pair_id"], p[s]) for p in builtin for s in ("risky", "benign")]
    best = max(((jaccard(x, y), i, j) for i, x in h for j, y in b), key=lambda t: t[0])
    vec = TfidfVectorizer(ngram_range=(1, 2)).fit([t for _, t in h + b])
    cos = cosine_similarity(vec.transform([t for _, t in h]), vec.transform([t for _, t in b]))
    k = np.unravel_index(np.argmax(cos), cos.shape)
    within = max((jaccard(x, y), i, j) for n, (i, x) in enumerate(h) for j, y in h[n + 1:] if i != j)
    return {"max_jaccard": round(best[0], 3), "max_jaccard_pair": [best[1], best[2]],
            "max_cosine": round(float(cos[k]), 3), "max_cosine_pair": [h[k[0]][0], b[k[1]][0]],
            "max_jaccard_within": round(within[0], 3)}


def lexical_transfer(train: list[dict], test: list[dict], C: float = 1.0, sublinear: bool = False) -> dict:
    """TF-IDF word 1-2 grams + logistic regression (C, tol 1e-8) fitted on all of ``train``, scoring ``test``:
    ROC AUC and pair accuracy (risky member above its partner)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    def xy(pairs):
        return [t for p in pairs for t in (p["risky"], p["benign"])], np.tile([1, 0], len(pairs))

    (xt, yt), (xs, ys) = xy(train), xy(test)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=sublinear)
    with threadpool_limits(1):
        model = LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(vec.fit_transform(xt), yt)
    s = model.decision_function(vec.transform(xs))
    return {"C": C, "sublinear": sublinear, "auc": round(float(roc_auc_score(ys, s)), 3),
            "pair_accuracy": round(float(np.mean(s[0::2] > s[1::2])), 3)}


def composition(pairs: list[dict]) -> dict:
    words = {s: [len(p[s].split()) for p in pairs] for s in ("risky", "benign")}
    diff = np.array(words["risky"]) - np.array(words["benign"])
    return {"pairs": len(pairs), "categories": dict(collections.Counter(p["category"] for p in pairs)),
            "severity": dict(sorted(collections.Counter(p["severity"] for p in pairs).items())),
            "risky_tone": dict(collections.Counter(p["risky_tone"] for p in pairs)),
            "benign_tone": dict(collections.Counter(p["benign_tone"] for p in pairs)),
            "settings": len({p["setting"] for p in pairs}),
            "mean_words": {s: round(float(np.mean(v)), 1) for s, v in words.items()},
            "risky_longer": round(float(np.mean(diff > 0)), 3), "risky_shorter": round(float(np.mean(diff < 0)), 3),
            "pair_jaccard_min": round(min(jaccard(p["risky"], p["benign"]) for p in pairs), 3),
            "pair_jaccard_median": round(float(np.median([jaccard(p["risky"], p["benign"]) for p in pairs])), 3)}


if __name__ == "__main__":
    held, built = load("cyber_risk_heldout"), load("cyber_risk_pairs")
    print("rule problems:", rule_problems(held) or "none")
    print("composition:", json.dumps(composition(held)))
    print("overlap with cyber_risk_pairs:", json.dumps(overlap(held, built)))
    for sub in (False, True):
        for C in (0.1, 1.0, 10.0, 100.0):
            print("lexical transfer:", json.dumps(lexical_transfer(built, held, C, sub)))
