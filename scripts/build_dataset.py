"""Build, check and describe the built-in dataset ``cyber_risk_pairs``.

    python scripts/build_dataset.py build [--drafts data_drafts]   # drafts + REVISIONS + split -> data file
    python scripts/build_dataset.py check                           # rules check of the data file
    python scripts/build_dataset.py lexical                         # the lexical control, all variants
    python scripts/build_dataset.py leaks [-n 30]                   # what the lexical model keys on
    python scripts/build_dataset.py report                          # markdown tables for the datasheet
    python scripts/build_dataset.py novelty [--new-from 33]         # new pairs: overlap, lexical control alone

The data file (src/riskscope/data/builtin/cyber_risk_pairs.jsonl) is the source of truth; ``build``
re-creates its version 1 pairs (001-032 of each category) from the writers' drafts (data_drafts/, not
in git) plus the reviewed rewrites in ``REVISIONS`` below, which also documents every text changed after
drafting, and keeps the version 2 pairs (033 and up) as the file has them.

``lexical_control`` is shared with tests/test_dataset_quality.py so the figure in
docs/datasets/cyber_risk_pairs.md and the test agree.
"""

from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "src" / "riskscope" / "data" / "builtin"
DATA_FILE = DATA_DIR / "cyber_risk_pairs.jsonl"
FORBIDDEN_FILE = DATA_DIR / "forbidden_words.txt"
HELDOUT_FILE = DATA_DIR / "cyber_risk_heldout.jsonl"

CATEGORIES = ("privacy", "authentication", "malware", "social_engineering", "code_vulnerability", "network",
              "data_exfiltration", "supply_chain", "physical_access", "cloud_misconfiguration",
              "financial_fraud", "insider_threat")
FIELDS = ("pair_id", "category", "severity", "setting", "risky_tone", "benign_tone", "split", "risky", "benign")
RISKY_TONES = ("calm", "neutral", "negative")
BENIGN_TONES = ("neutral", "negative")
SPLIT_SEED = "cyber_risk_pairs/v1"
TEST_FRACTION = 0.2
LEXICAL_C = 1.0          # the reported configuration; other C values are reported alongside
LEXICAL_MAX_AUC = 0.70   # datasheet rule: rewrite leaking pairs until the lexical AUC is at most this


# ----------------------------------------------------------------------------------------------- io

def load_pairs(path: Path | str = DATA_FILE) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_pairs(pairs: list[dict], path: Path | str = DATA_FILE) -> None:
    lines = [json.dumps({k: p[k] for k in FIELDS}, ensure_ascii=True) for p in pairs]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def forbidden_patterns(path: Path | str = FORBIDDEN_FILE) -> list[re.Pattern]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(re.compile(line, re.IGNORECASE))
    return out


# ------------------------------------------------------------------------------------- text helpers

def words(text: str) -> list[str]:
    """Whitespace-separated words: the unit of the 8-35 word rule and of 'longer'."""
    return text.split()


def n_sentences(text: str) -> int:
    # a sentence ends at . ! ? followed by a capitalised word or the end; "J. Ortiz" and "3 a.m. on" do not end one
    return len(re.findall(r"(?<!\b[A-Z])[.!?]+(?=\s+[A-Z0-9'\"(]|\s*$)", text.strip()))


def tokens(text: str) -> set[str]:
    """Lower-cased word tokens for overlap measures (punctuation dropped, 'doctor's' kept whole)."""
    return set(re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower()))


def jaccard(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    return len(ta & tb) / len(ta | tb)


def shared_ratio(a: str, b: str) -> float:
    """Share of the shorter member's distinct words that also occur in the other member."""
    ta, tb = tokens(a), tokens(b)
    return len(ta & tb) / min(len(ta), len(tb))


# -------------------------------------------------------------------------------------------- split

def assign_split(pairs: list[dict], seed: str = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> None:
    """Fixed 80/20 split by pair, stratified by category.

    Within each category the pairs are ranked by sha256(seed + pair_id) and the first
    round(test_fraction * n) go to "test". Deterministic, and stable under edits: rewriting a
    text never moves its pair, and adding a pair moves at most one other pair of its category.
    """
    by_cat: dict[str, list[dict]] = collections.defaultdict(list)
    for p in pairs:
        by_cat[p["category"]].append(p)
    for members in by_cat.values():
        ranked = sorted(members, key=lambda p: hashlib.sha256(f"{seed}:{p['pair_id']}".encode()).hexdigest())
        k = int(round(test_fraction * len(members)))
        for i, p in enumerate(ranked):
            p["split"] = "test" if i < k else "train"


# ---------------------------------------------------------------------------------- lexical control

def _vectorizer(features: str):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    if features == "tfidf_word12":
        return TfidfVectorizer(ngram_range=(1, 2))
    if features == "tfidf_word12_sublinear":
        return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    if features == "bow_word1":
        return CountVectorizer(ngram_range=(1, 1), binary=True)
    if features == "tfidf_char2-5":
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5))
    raise ValueError(f"unknown features {features!r}")


LEXICAL_VARIANTS = ("tfidf_word12", "tfidf_word12_sublinear", "bow_word1", "tfidf_char2-5")


def lexical_control(pairs: list[dict], features: str = "tfidf_word12", C: float = LEXICAL_C,
                    n_splits: int = 5) -> dict:
    """A surface-word classifier with pair-grouped k-fold CV: can the words alone tell risky from benign?

    Texts are [risky_0, benign_0, risky_1, benign_1, ...]; labels 1/0; groups = pair, so both members
    of a pair are always in the same fold (sklearn GroupKFold, deterministic). The vectorizer is fitted
    inside each fold. Returns the ROC AUC of the out-of-fold decision scores over all texts, the pair
    accuracy (share of pairs whose risky member scores higher than its benign member) and the scores.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupKFold
    from threadpoolctl import threadpool_limits

    texts = [t for p in pairs for t in (p["risky"], p["benign"])]
    y = np.tile([1, 0], len(pairs))
    groups = np.repeat(np.arange(len(pairs)), 2)
    scores = np.zeros(len(texts))
    with threadpool_limits(1):  # tiny sparse fits: BLAS threads only add contention (same scores, ~6x faster)
        for train, test in GroupKFold(n_splits=n_splits).split(texts, y, groups):
            vec = _vectorizer(features)
            x_train = vec.fit_transform([texts[i] for i in train])
            model = LogisticRegression(C=C, tol=1e-8, max_iter=10000).fit(x_train, y[train])
            scores[test] = model.decision_function(vec.transform([texts[i] for i in test]))
    return {"features": features, "C": C, "n_splits": n_splits,
            "auc": float(roc_auc_score(y, scores)),
            "pair_accuracy": float(np.mean(scores[0::2] > scores[1::2])),
            "scores": scores}


def lexical_table(pairs: list[dict], Cs=(0.1, 1.0, 10.0, 100.0)) -> list[dict]:
    rows = []
    for features in LEXICAL_VARIANTS:
        for C in Cs:
            r = lexical_control(pairs, features, C)
            rows.append({k: r[k] for k in ("features", "C", "auc", "pair_accuracy")})
    return rows


def leaks(pairs: list[dict], n: int = 30) -> str:
    """The pairs the lexical model is most confidently right about, and its top-weighted n-grams."""
    from sklearn.linear_model import LogisticRegression

    res = lexical_control(pairs)
    s = res["scores"]
    rs, bs = s[0::2], s[1::2]
    # share of the other class each text is correctly ranked against (its contribution to the AUC)
    contrib = np.array([(bs < r).mean() for r in rs]) + np.array([(rs > b).mean() for b in bs])
    out = [f"AUC {res['auc']:.3f}  pair accuracy {res['pair_accuracy']:.3f}"]
    for i in np.argsort(-contrib)[:n]:
        p = pairs[i]
        a, b = tokens(p["risky"]), tokens(p["benign"])
        out.append(f"{p['pair_id']:28s} {contrib[i]:.2f}  R+: {' '.join(sorted(a - b))}  |  B+: {' '.join(sorted(b - a))}")
    vec = _vectorizer("tfidf_word12")
    texts = [t for p in pairs for t in (p["risky"], p["benign"])]
    model = LogisticRegression(C=LEXICAL_C, tol=1e-8, max_iter=10000).fit(vec.fit_transform(texts),
                                                                          np.tile([1, 0], len(pairs)))
    names = vec.get_feature_names_out()
    order = np.argsort(model.coef_[0])
    out.append("risky n-grams:  " + ", ".join(f"{names[i]} {model.coef_[0][i]:.2f}" for i in order[::-1][:40]))
    out.append("benign n-grams: " + ", ".join(f"{names[i]} {model.coef_[0][i]:.2f}" for i in order[:40]))
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- checks

def rule_problems(pairs: list[dict]) -> list[str]:
    """Every datasheet rule that can be checked per pair; empty when all pass."""
    bad = []
    pats = forbidden_patterns()
    seen: dict[str, str] = {}
    for p in pairs:
        pid = p.get("pair_id")
        if set(p) != set(FIELDS):
            bad.append(f"{pid}: fields {sorted(set(p) ^ set(FIELDS))}")
        if p.get("category") not in CATEGORIES or not str(pid).startswith(f"{p.get('category')}-"):
            bad.append(f"{pid}: category {p.get('category')!r}")
        if p.get("severity") not in (1, 2, 3, 4, 5):
            bad.append(f"{pid}: severity {p.get('severity')!r}")
        if p.get("risky_tone") not in RISKY_TONES or p.get("benign_tone") not in BENIGN_TONES:
            bad.append(f"{pid}: tones {p.get('risky_tone')!r}/{p.get('benign_tone')!r}")
        if p.get("split") not in ("train", "test"):
            bad.append(f"{pid}: split {p.get('split')!r}")
        if not isinstance(p.get("setting"), str) or p["setting"] != p["setting"].strip().lower() or not p["setting"]:
            bad.append(f"{pid}: setting {p.get('setting')!r}")
        for side in ("risky", "benign"):
            t = p[side]
            if not (8 <= len(words(t)) <= 35):
                bad.append(f"{pid}:{side}: {len(words(t))} words")
            if not 1 <= n_sentences(t) <= 2:
                bad.append(f"{pid}:{side}: {n_sentences(t)} sentences")
            if not t.isascii() or "\n" in t or t != t.strip():
                bad.append(f"{pid}:{side}: non-ASCII, line break or padding")
            for pat in pats:
                m = pat.search(t)
                if m:
                    bad.append(f"{pid}:{side}: forbidden {pat.pattern!r} in {m.group(0)!r}")
            key = " ".join(t.lower().split())
            if key in seen:
                bad.append(f"{pid}:{side}: duplicates {seen[key]}")
            seen[key] = f"{pid}:{side}"
    return bad


# ------------------------------------------------------------------------------------- composition

def composition(pairs: list[dict]) -> dict:
    n = len(pairs)
    lens = {side: np.array([len(words(p[side])) for p in pairs]) for side in ("risky", "benign")}
    return {
        "pairs": n,
        "texts": 2 * n,
        "per_category": collections.Counter(p["category"] for p in pairs),
        "severity": collections.Counter(p["severity"] for p in pairs),
        "severity_by_category": {c: collections.Counter(p["severity"] for p in pairs if p["category"] == c)
                                 for c in CATEGORIES},
        "split": collections.Counter(p["split"] for p in pairs),
        "split_by_category": {c: collections.Counter(p["split"] for p in pairs if p["category"] == c)
                              for c in CATEGORIES},
        "risky_tone": collections.Counter(p["risky_tone"] for p in pairs),
        "benign_tone": collections.Counter(p["benign_tone"] for p in pairs),
        "lengths": {side: (float(v.mean()), float(np.median(v)), int(v.min()), int(v.max()), float(v.std()))
                    for side, v in lens.items()},
        "risky_longer": float(np.mean(lens["risky"] > lens["benign"])),
        "same_length": float(np.mean(lens["risky"] == lens["benign"])),
        "settings": collections.Counter(p["setting"] for p in pairs),
        "jaccard": np.array([jaccard(p["risky"], p["benign"]) for p in pairs]),
        "shared": np.array([shared_ratio(p["risky"], p["benign"]) for p in pairs]),
    }


def cross_pair_similarity(pairs: list[dict]) -> dict:
    """Highest similarity between texts of DIFFERENT pairs: TF-IDF (word 1-2 gram) cosine and token Jaccard."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [t for p in pairs for t in (p["risky"], p["benign"])]
    pid = np.repeat(np.arange(len(pairs)), 2)
    x = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts)
    cos = (x @ x.T).toarray()
    toks = [tokens(t) for t in texts]
    inter = np.array([[len(a & b) for b in toks] for a in toks], dtype=float)
    sizes = np.array([len(a) for a in toks], dtype=float)
    jac = inter / (sizes[:, None] + sizes[None, :] - inter)
    same = pid[:, None] == pid[None, :]
    cos[same] = -1
    jac[same] = -1
    i, j = np.unravel_index(np.argmax(cos), cos.shape)
    k, m = np.unravel_index(np.argmax(jac), jac.shape)
    return {"max_cosine": float(cos[i, j]), "cosine_pair": (pairs[pid[i]]["pair_id"], pairs[pid[j]]["pair_id"]),
            "max_jaccard": float(jac[k, m]), "jaccard_pair": (pairs[pid[k]]["pair_id"], pairs[pid[m]]["pair_id"])}


def nearest_other(new: list[dict], others: list[dict], same_set: bool = False) -> list[dict]:
    """For every text of ``new``, its closest text in ``others`` (a different pair) by TF-IDF (word 1-2 gram,
    fitted on both) cosine and by token Jaccard. With ``same_set`` the two lists are the same pairs."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    a = [(p["pair_id"], s, p[s]) for p in new for s in ("risky", "benign")]
    b = [(p["pair_id"], s, p[s]) for p in others for s in ("risky", "benign")]
    vec = TfidfVectorizer(ngram_range=(1, 2)).fit([t for *_, t in a + b])
    cos = (vec.transform([t for *_, t in a]) @ vec.transform([t for *_, t in b]).T).toarray()
    tb = [tokens(t) for *_, t in b]
    out = []
    for i, (pid, side, text) in enumerate(a):
        ta = tokens(text)
        jac = np.array([len(ta & x) / len(ta | x) for x in tb])
        if same_set:
            mask = np.array([q == pid for q, *_ in b])
            cos[i, mask] = -1
            jac[mask] = -1
        j, k = int(np.argmax(cos[i])), int(np.argmax(jac))
        out.append({"text": f"{pid}:{side}", "cosine": float(cos[i, j]), "cosine_with": f"{b[j][0]}:{b[j][1]}",
                    "jaccard": float(jac[k]), "jaccard_with": f"{b[k][0]}:{b[k][1]}"})
    return out


def riskscope_lexical(pairs: list[dict], seed: int = 0) -> dict:
    """riskscope's own lexical baseline (``riskscope.probes.lexical_baseline``: sublinear TF-IDF, C chosen per
    fold by inner grouped CV, 5 seeded pair-grouped folds), as the probe reports show it."""
    from riskscope.probes import lexical_baseline

    texts = [t for p in pairs for t in (p["risky"], p["benign"])]
    res = lexical_baseline(texts, np.tile([1, 0], len(pairs)), np.repeat(np.arange(len(pairs)), 2), 5, seed=seed)
    return {"auc": float(res.auc), "pair_accuracy": float(res.pair_accuracy)}


def pair_number(pair_id: str) -> int:
    return int(pair_id.rsplit("-", 1)[1])


def novelty(pairs: list[dict], new_from: int, threshold: float = 0.35) -> str:
    """Checks of the pairs numbered ``new_from`` and up: closest held-out, older and other new texts (flagged
    above ``threshold`` cosine or Jaccard), and the lexical control on the new pairs alone and on all pairs."""
    new = [p for p in pairs if pair_number(p["pair_id"]) >= new_from]
    old = [p for p in pairs if pair_number(p["pair_id"]) < new_from]
    held = load_pairs(HELDOUT_FILE)
    out = [f"{len(new)} new pairs, {len(old)} older"]
    for name, others, same in (("held-out", held, False), ("older", old, False), ("other new", new, True)):
        if not others:
            continue
        near = nearest_other(new, others, same)
        top_c = max(near, key=lambda r: r["cosine"])
        top_j = max(near, key=lambda r: r["jaccard"])
        out.append(f"vs {name}: max cosine {top_c['cosine']:.3f} ({top_c['text']} ~ {top_c['cosine_with']}), "
                   f"max jaccard {top_j['jaccard']:.3f} ({top_j['text']} ~ {top_j['jaccard_with']})")
        out += [f"  FLAG {r['text']} ~ {r['cosine_with']} cos {r['cosine']:.3f} / {r['jaccard_with']} jac "
                f"{r['jaccard']:.3f}" for r in near if r["cosine"] > threshold or r["jaccard"] > threshold]
    if len(new) >= 10:
        r = lexical_control(new)
        out.append(f"lexical control, new pairs alone: AUC {r['auc']:.3f}, pair accuracy {r['pair_accuracy']:.3f}")
    r = lexical_control(pairs)
    out.append(f"lexical control, all {len(pairs)} pairs: AUC {r['auc']:.3f}, pair accuracy {r['pair_accuracy']:.3f}")
    for name, subset in (("new pairs alone", new), (f"all {len(pairs)} pairs", pairs)):
        if len(subset) >= 10:
            r = riskscope_lexical(subset)
            out.append(f"riskscope lexical baseline, {name}: AUC {r['auc']:.3f}, pair accuracy {r['pair_accuracy']:.3f}")
    return "\n".join(out)


# -------------------------------------------------------------------------------------------- build

def build(drafts: Path) -> list[dict]:
    pairs = []
    for cat in CATEGORIES:
        path = drafts / f"{cat}.jsonl"
        pairs += load_pairs(path)
    unknown = set(REVISIONS) - {p["pair_id"] for p in pairs}
    if unknown:
        raise SystemExit(f"REVISIONS for unknown pairs: {sorted(unknown)}")
    for p in pairs:
        rev = REVISIONS.get(p["pair_id"], {})
        for k, v in rev.items():
            if k != "why":
                p[k] = v
    # version 2 pairs (033 and up) have no separate drafts: the data file holds them
    pairs += [p for p in load_pairs(DATA_FILE) if pair_number(p["pair_id"]) > 32] if DATA_FILE.is_file() else []
    assign_split(pairs)
    return [{k: p[k] for k in FIELDS} for p in pairs]


# ------------------------------------------------------------------------------------------- report

def report(pairs: list[dict]) -> str:
    c = composition(pairs)
    out = [f"pairs {c['pairs']}, texts {c['texts']}", ""]
    sev_levels = (1, 2, 3, 4, 5)
    out.append("| category | pairs | train | test | " + " | ".join(f"sev {s}" for s in sev_levels) + " |")
    out.append("|---|---:|---:|---:|" + "---:|" * len(sev_levels))
    for cat in CATEGORIES:
        sv = c["severity_by_category"][cat]
        sp = c["split_by_category"][cat]
        out.append(f"| {cat} | {c['per_category'][cat]} | {sp['train']} | {sp['test']} | "
                   + " | ".join(str(sv[s]) for s in sev_levels) + " |")
    out.append(f"| **total** | **{c['pairs']}** | **{c['split']['train']}** | **{c['split']['test']}** | "
               + " | ".join(f"**{c['severity'][s]}**" for s in sev_levels) + " |")
    out.append("")
    for side in ("risky", "benign"):
        mean, med, lo, hi, sd = c["lengths"][side]
        out.append(f"length {side}: mean {mean:.1f}, median {med:.0f}, sd {sd:.1f}, min {lo}, max {hi}")
    out.append(f"risky member longer: {c['risky_longer']:.3f}, same length: {c['same_length']:.3f}")
    out.append(f"risky tone: {dict(c['risky_tone'])}  benign tone: {dict(c['benign_tone'])}")
    out.append(f"settings: {len(c['settings'])} distinct; most common {c['settings'].most_common(8)}")
    j, s = c["jaccard"], c["shared"]
    out.append(f"within-pair jaccard: min {j.min():.3f} p5 {np.percentile(j, 5):.3f} median {np.median(j):.3f}")
    out.append(f"within-pair shared ratio: min {s.min():.3f} p5 {np.percentile(s, 5):.3f} median {np.median(s):.3f}")
    out.append(f"cross-pair: {cross_pair_similarity(pairs)}")
    out.append("")
    out.append("| features | C | AUC | pair accuracy |")
    out.append("|---|---:|---:|---:|")
    for r in lexical_table(pairs):
        out.append(f"| {r['features']} | {r['C']:g} | {r['auc']:.3f} | {r['pair_accuracy']:.3f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--drafts", type=Path, default=ROOT / "data_drafts")
    b.add_argument("--out", type=Path, default=DATA_FILE)
    for name in ("check", "lexical", "report"):
        s = sub.add_parser(name)
        s.add_argument("--data", type=Path, default=DATA_FILE)
    lk = sub.add_parser("leaks")
    lk.add_argument("--data", type=Path, default=DATA_FILE)
    lk.add_argument("-n", type=int, default=30)
    nv = sub.add_parser("novelty")
    nv.add_argument("--data", type=Path, default=DATA_FILE)
    nv.add_argument("--new-from", type=int, default=33, help="pairs numbered this and up are the new ones")
    nv.add_argument("--threshold", type=float, default=0.35)
    args = ap.parse_args(argv)

    if args.cmd == "build":
        pairs = build(args.drafts)
        problems = rule_problems(pairs)
        write_pairs(pairs, args.out)
        print(f"wrote {len(pairs)} pairs to {args.out} ({len(REVISIONS)} revised after drafting)")
        print("\n".join(problems) or "rules: ok")
        return 1 if problems else 0
    pairs = load_pairs(args.data)
    if args.cmd == "check":
        problems = rule_problems(pairs)
        print("\n".join(problems) or "rules: ok")
        return 1 if problems else 0
    if args.cmd == "lexical":
        for r in lexical_table(pairs):
            print(f"{r['features']:24s} C={r['C']:<6g} AUC {r['auc']:.3f}  pair accuracy {r['pair_accuracy']:.3f}")
        return 0
    if args.cmd == "leaks":
        print(leaks(pairs, args.n))
        return 0
    if args.cmd == "novelty":
        print(novelty(pairs, args.new_from, args.threshold))
        return 0
    print(report(pairs))
    return 0


# ---------------------------------------------------------------------------------------- revisions
# Texts changed after drafting, by pair. "why" says which kind of change:
#   review  - a security-engineering review fix (risk not real, benign not harmless, wording rule);
#   leak    - lexical-control rewrite: the detail that carries the risk is kept, but a word the
#             TF-IDF model had learned as a class cue (see `leaks`) is moved, balanced or replaced;
#   tone    - lexical-control rewrite: the negative/odd incidental detail that made a benign member
#             'negative' is now shared by both members, so alarming words stop marking the benign side
#             (risky_tone becomes "negative" for those pairs).
#   "tone+leak" and "review+leak" combine two of these.

REVISIONS: dict[str, dict] = {
    # ---------------------------------------------------------------- review fixes
    "malware-006": dict(why="review: 'unknown sources' (giveaway word, now forbidden)",
        risky="Happy to skip the ads, the delivery driver installed a modded music app from a download site after switching on installs from outside the app store."),
    "malware-021": dict(why="review: benign sentence was ungrammatical",
        benign="To prove she was human, the accountant ticked the box on the web page, clicked Verify, and picked all the squares with buses in them."),

    # ---------------------------------------------------------------- tone: negative detail shared
    "privacy-020": dict(why="tone", risky_tone="negative",
        risky="The teenager posted a video of his first shift, showing his name tag, the store's street sign and his weekly schedule, and grumbling that the manager had yelled at him."),
    "privacy-022": dict(why="tone", risky_tone="negative",
        risky="The addiction support group's organizer, apologizing that the heating had failed again, emailed the meeting reminder with every member's address visible in the CC line.",
        benign="The addiction support group's organizer, apologizing that the heating had failed again, emailed the meeting reminder with every member's address hidden in the BCC line."),
    "privacy-025": dict(why="tone", risky_tone="negative",
        risky="Cursing after spilling coffee on her keyboard, the graduate student pushed the survey responses, with participants' names and HIV status, to a public code repository.",
        benign="Cursing after spilling coffee on her keyboard, the graduate student pushed the blank survey questionnaire to a public code repository alongside her analysis scripts."),
    "privacy-031": dict(why="tone", risky_tone="negative",
        risky="The smart doorbell posted clips of every visitor's face to the neighborhood app by default, and the owner woke to one of a fox screaming at 3 a.m.",
        benign="The smart doorbell sent clips of every visitor's face to the family's phones by default, and the owner woke to one of a fox screaming at 3 a.m."),
    "authentication-003": dict(why="tone", risky_tone="negative",
        risky="The founder, swearing at the jammed printer, saved the admin account's two-factor recovery codes in a note on the office's shared tablet."),
    "authentication-006": dict(why="tone", risky_tone="negative",
        risky="The bank's new app, which reviewers hated for its clunky design, let customers sign in with a four-digit PIN and allowed unlimited wrong guesses."),
    "authentication-012": dict(why="tone", risky_tone="negative",
        risky="During the dinner rush, cursing when the screen froze twice, every server rang up orders on the till under the manager's code."),
    "authentication-022": dict(why="tone", risky_tone="negative",
        risky="The shop's admin account still sent its two-factor codes to the phone of a manager who had quit last year, and he complained loudly about the constant buzzing."),
    "authentication-031": dict(why="tone", risky_tone="negative",
        risky="Sighing at the endless queue, the pharmacist left her login badge clipped in the dispensing terminal all shift so technicians could keep filling orders."),
    "malware-020": dict(why="tone", risky_tone="negative",
        risky="To play a film from a torrent, the student, cursing her dying battery, installed the codec pack that a flashing pop-up on the streaming page insisted she needed."),
    "malware-022": dict(why="tone", risky_tone="negative",
        risky="The bar manager plugged an unbranded streaming box with hundreds of free channels into the staff network after the old one died mid-match and the crowd booed."),
    "malware-025": dict(why="tone", risky_tone="negative",
        risky="At the gate, the passenger, annoyed that her battery was dead, accepted a charging cable handed out by a friendly man and plugged it into her work laptop."),
    "malware-028": dict(why="tone", risky_tone="negative",
        risky="All night, the idle office computer's fans roared at full speed, with a process named svch0st using every processor core, and the cleaner complained about the noise."),
    "code_vulnerability-009": dict(why="tone", risky_tone="negative",
        risky="The hotel app fetched booking details for the booking number in the page address, whichever guest was logged in, but it froze for a full minute during the Friday evening rush."),
    "code_vulnerability-012": dict(why="tone", risky_tone="negative",
        risky="The newsroom's publishing system, which crashed twice on deadline night, let reporters upload files of any type into a folder the web server executed as PHP.",
        benign="The newsroom's publishing system, which crashed twice on deadline night, let reporters upload JPEG and PNG files into a static image folder."),
    "code_vulnerability-018": dict(why="tone", risky_tone="negative",
        risky="The hospital's imaging tool, which threw a frightening error whenever the disk filled, encrypted every scan with AES in ECB mode under one fixed key baked into the program."),
    "code_vulnerability-023": dict(why="tone", risky_tone="negative",
        risky="The blogging startup's import-image-from-URL feature, so slow that furious users flooded support, fetched any address a user entered, including the cloud metadata service."),
    "code_vulnerability-031": dict(why="tone", risky_tone="negative",
        risky="The host swore at the podcast's website contact form, which accepted messages of unlimited length and stored each one in the small shared database.",
        benign="The host swore at the podcast's website contact form, which accepted messages of up to two thousand characters and cut off a long fan letter."),
    "network-003": dict(why="tone", risky_tone="negative",
        risky="After a tense week of screeching alarms during the move, the hospital plugged the new lab blood analyzers into the same network segment as the staff laptops and patient-room TVs.",
        benign="After a tense week of screeching alarms during the move, the hospital plugged the new lab blood analyzers into their own network segment, reachable only from the lab results server."),
    "network-007": dict(why="tone", risky_tone="negative",
        risky="The university's firewall showed its web management login page on the campus's public address, which the exhausted admin cursed during the midnight outage."),
    "network-014": dict(why="tone", risky_tone="negative",
        risky="The warehouse's handheld scanners connected over a Wi-Fi network still using WEP, and workers swore loudly whenever a forklift blocked the signal near the freezer."),
    "network-024": dict(why="tone", risky_tone="negative",
        risky="The real estate office's network printer showed its web admin page to anyone on the lobby Wi-Fi, and it jammed with a horrible grinding noise during the public open house."),
    "network-026": dict(why="tone", risky_tone="negative",
        risky="The hotel's wired room ports put every guest on one shared subnet, so laptops could see other rooms' devices, and the TVs blared static at midnight."),
    "network-030": dict(why="tone", risky_tone="negative",
        risky="While the heating failed and everyone shivered, the food bank's office switches kept serving their management page with a self-signed certificate that volunteers clicked past every time."),
    "network-031": dict(why="tone", risky_tone="negative",
        risky="The consultancy plugged the boardroom's smart TV into the main office network so staff could cast slides, and the screen went black mid-pitch when its power cable slipped.",
        benign="The consultancy plugged the boardroom's smart TV into the guest network so staff could cast slides, and the screen went black mid-pitch when its power cable slipped."),
    "data_exfiltration-002": dict(why="tone", risky_tone="negative",
        risky="The mail server, its overheating fans howling, sent thousands of DNS queries an hour for long random-looking subdomains of a single obscure domain."),
    "data_exfiltration-004": dict(why="tone", risky_tone="negative",
        risky="An engineering PC on the factory network sent steady ping packets, each padded to nearly full size, to one address overseas all night while a stuck conveyor screeched."),
    "data_exfiltration-017": dict(why="tone", risky_tone="negative",
        risky="After a tense argument about overtime, the HR manager emailed the full salary spreadsheet for all drivers to an outside recruiter who had asked for a rough pay range.",
        benign="After a tense argument about overtime, the HR manager emailed an outside recruiter the rough pay range for drivers that he had asked for."),
    "data_exfiltration-019": dict(why="tone", risky_tone="negative",
        risky="Between 1 and 4 a.m., as furious complaints about the cancelled cruise poured in, one travel agent's mailbox sent two thousand passport scans to a single outside address."),
    "data_exfiltration-023": dict(why="tone", risky_tone="negative",
        risky="The ministry clerk pasted the draft trade agreement into a free public translation website, and the result was full of furious-sounding mistranslations."),
    "supply_chain-003": dict(why="tone", risky_tone="negative",
        risky="This month, the tax software's updater installed a patch from a server presenting a certificate from a new issuer, and the reboot left the office screens black for an hour.",
        benign="This month, the tax software's updater installed a patch from a server presenting the same vendor certificate as always, and the reboot left the office screens black for an hour."),
    "supply_chain-006": dict(why="tone", risky_tone="negative",
        risky="The sawmill's saw controllers downloaded vendor firmware updates over plain HTTP without any signature check, then rebooted with a deafening clatter of machinery."),
    "supply_chain-012": dict(why="tone", risky_tone="negative",
        risky="The startup's web service was built on a container base image published by an individual account with no source, and builds kept failing with angry red errors."),
    "supply_chain-013": dict(why="review+leak: benign no longer installs the update of a sold extension; the sale is shared context",
        benign="After the tab-manager extension was sold to another company, IT removed it from the agents' browsers, and the agents groaned loudly about losing their tab groups.",
        risky="After the tab-manager extension was sold to another company, it updated on the agents' browsers and asked to read and change every website they visited."),
    "supply_chain-016": dict(why="tone", risky_tone="negative",
        risky="The grad student loaded a pretrained model from a pickle file posted by a throwaway account onto the lab's shared GPU server, whose fans howled all night."),
    "supply_chain-025": dict(why="tone", risky_tone="negative",
        risky="The school plugged in a donated batch of used network switches from a local company with their old settings intact, though one sparked and filled the closet with smoke."),
    "supply_chain-027": dict(why="tone", risky_tone="negative",
        risky="Once the smashed bottles were swept up, the brewery gave the bottling machine's vendor an always-on VPN connection into the plant network for remote tuning.",
        benign="Once the smashed bottles were swept up, the brewery gave the bottling machine's vendor a VPN connection into the plant network that staff switched on for each tuning session."),
    "supply_chain-031": dict(why="tone", risky_tone="negative",
        risky="The design studio's portfolio site loaded its gallery script from a public CDN with no integrity hash in the page, and the gallery froze on every phone."),
    "physical_access-002": dict(why="tone", risky_tone="negative",
        risky="During the heat wave, the technicians, complaining bitterly that the heavy server room door slammed shut, wedged it open with a fire extinguisher and left for lunch."),
    "physical_access-006": dict(why="tone", risky_tone="negative",
        risky="The school's side gate, normally locked during lessons, was left on the latch after irritated parents bringing forgotten lunches complained loudly at the front office."),
    "physical_access-007": dict(why="tone", risky_tone="negative",
        risky="The night clerk handed a spare key card for room 218 to a furious man who yelled about being locked out with his ID inside."),
    "physical_access-010": dict(why="tone", risky_tone="negative",
        risky="An airport cleaner held the airside staff door open for a traveler who shouted that he had left his passport at the gate."),
    "physical_access-012": dict(why="tone", risky_tone="negative",
        risky="The badge reader on the genomics lab had been beeping loudly and flashing red for a month, so the door simply stood unlatched during the day."),
    "physical_access-021": dict(why="tone", risky_tone="negative",
        risky="After a chaotic, shouting late count, the county election office stored the ballot scanners' memory cards overnight in a cardboard box under a clerk's desk."),
    "physical_access-022": dict(why="tone", risky_tone="negative",
        risky="Tired of the shrieking false triggers, the museum switched off the motion sensors in the east gallery for the rest of the season."),
    "cloud_misconfiguration-012": dict(why="tone", risky_tone="negative",
        risky="After a crash wiped her morning's work, the data scientist relaunched a notebook server on a cloud VM with the token disabled and port 8888 open to the internet.",
        benign="After a crash wiped her morning's work, the data scientist relaunched a notebook server on a cloud VM and reached it through an SSH tunnel to port 8888."),
    "cloud_misconfiguration-031": dict(why="tone", risky_tone="negative",
        risky="The airline's internal test load balancer kept accepting connections over the old TLS 1.0 protocol for an ancient check-in kiosk that infuriated gate staff."),
    "financial_fraud-004": dict(why="tone", risky_tone="negative",
        risky="The electronics store clerk refunded an $800 television to a different card than the one used to buy it, while the customer shouted about the cracked screen."),
    "financial_fraud-010": dict(why="tone", risky_tone="negative",
        risky="After a furious employer phoned twice about missing overtime, the credit union's clerk released a $310,000 payroll file in which forty employees' wages went to one account.",
        benign="After a furious employer phoned twice about missing overtime, the credit union's clerk released a $310,000 payroll file paying forty employees into forty separate accounts."),
    "financial_fraud-027": dict(why="tone", risky_tone="negative",
        risky="The cafe's old card terminal jammed so often the staff swore at it, and it printed the full card number and expiry date on every receipt.",
        benign="The cafe's old card terminal jammed so often the staff swore at it, and it printed only the last four digits on every receipt."),
    "insider_threat-002": dict(why="tone", risky_tone="negative",
        risky="While photographers shouted outside, the registration clerk opened the medical record of the famous singer admitted overnight, though she had played no part in his care."),
    "insider_threat-003": dict(why="tone", risky_tone="negative",
        risky="After a chaotic midnight crash, the engineer turned off audit logging on the payments table before running the month-end database fix, then switched it back on.",
        benign="After a chaotic midnight crash, the engineer kept audit logging on the payments table while running the month-end database fix, with a second approver."),
    "insider_threat-005": dict(why="tone", risky_tone="negative",
        risky="During a tense afternoon, the teller looked up the balance and recent transactions of her ex-husband's account while a customer yelled at her window about a fee."),
    "insider_threat-017": dict(why="tone", risky_tone="negative",
        risky="The call center agent jotted each shouting caller's card number and expiry date in a notebook he kept in his jacket."),
    "insider_threat-025": dict(why="tone", risky_tone="negative",
        risky="The day after his poor review, the IT lead slammed his office door, then changed the passwords on the core switches and kept the new ones to himself."),
    "social_engineering-008": dict(why="tone", risky_tone="negative",
        risky="A caller who introduced himself as the traveling sales director, locked out and fuming before a big pitch, got the help desk to reset his password by phone."),
    "social_engineering-024": dict(why="tone", risky_tone="negative",
        risky="A furious caller in tears, identifying herself as the client's daughter, got the receptionist to confirm the date and room of the client's divorce hearing."),
    "social_engineering-029": dict(why="tone", risky_tone="negative",
        risky="Irritated after a long wait on hold, a caller who knew the director's name and office address persuaded the registrar's support agent to move the company's domain."),

    # ---------------------------------------------------------------- leak: class-cue words moved or balanced
    "supply_chain-015": dict(why="leak",
        risky="The county's IT office bought its core network switches from the cheapest listing on an overseas auction site, with no support contract from the manufacturer.",
        benign="The county's IT office bought its core network switches from the manufacturer's authorized partner, with the usual support contract, at the negotiated state price."),
    "authentication-019": dict(why="leak",
        risky="In a cheerful welcome message, the developer sent the new contractor the team's production database password, pasted as plain text.",
        benign="In a cheerful welcome message, the developer sent the new contractor an invitation to the team's password vault, where the production database login was kept."),
    "network-023": dict(why="leak",
        benign="The project's build server accepted SSH key logins on port 22 from the whole internet, with password logins switched off."),
    "network-009": dict(why="leak",
        risky="To save buying a second switch, the boutique put its new security cameras on the same network as the card payment terminals.",
        benign="To save buying a second switch, the boutique put its new security cameras on the same network as the stockroom printer, away from the card payment terminals."),
    "privacy-002": dict(why="tone+leak", risky_tone="negative",
        risky="The teacher winced when the class photo came out blurry, but posted it on the school's public page, captioning it with each child's full name and home street.",
        benign="The teacher winced when the class photo came out blurry, but posted it on the school's public page, captioning it with the name of the zoo they had visited."),
    "data_exfiltration-011": dict(why="tone+leak", risky_tone="negative",
        risky="Late on Friday, cursing the jammed printer, the HR assistant printed the entire payroll register, with home addresses and salaries, and carried it out of the building in a tote bag.",
        benign="Late on Friday, cursing the jammed printer, the HR assistant printed the entire safety handbook, with the emergency numbers of every site, and carried it to the training room in a tote bag."),
    "authentication-001": dict(why="leak",
        benign="To save time, the night nurses each signed in to the medication cart with a quick badge tap, its instructions written on masking tape around the handle."),
    "code_vulnerability-008": dict(why="leak",
        risky="The startup's web shop kept each shopping cart in the browser cookie as a pickled Python object and unpickled it on the server for every request.",
        benign="The startup's web shop kept each shopping cart ID in a signed browser cookie and loaded the cart from the database on every request."),
    "data_exfiltration-029": dict(why="leak",
        benign="The teacher's grading app sent crash reports to its developer that included the app version, the error code and the name of the failing screen."),
    "network-021": dict(why="leak",
        benign="The public library's printers and switches answered SNMP queries from the one monitoring server on the network, using a long random community string."),
    "privacy-006": dict(why="leak",
        risky="The school counselor's notes on students' home troubles and self-harm synced through the district's cloud account to a classroom tablet the other teachers shared.",
        benign="The school counselor's notes on students' home troubles and self-harm synced through the district's cloud account to her encrypted work laptop, kept locked in her office."),
    "social_engineering-007": dict(why="leak",
        benign="Her tearful grandson called the grandmother from abroad saying his team had lost the final, and begged her to text him her cake recipe right away so he could bake it for the team."),
    "data_exfiltration-013": dict(why="leak",
        benign="In her last week, the contract artist cloned the one repository she worked on onto her studio laptop to finish the final character models at home."),
    "code_vulnerability-030": dict(why="tone+leak", risky_tone="negative",
        risky="The university library's room booking page sent no header restricting framing, so any other website could show it inside a frame, and it failed miserably during exam week.",
        benign="The university library's room booking page sent a header restricting framing, so no other website could show it inside a frame, and it failed miserably during exam week."),
    "malware-014": dict(why="leak",
        risky="To avoid waiting on procurement, the artist ran a license activator that a team member had found on a file-sharing site so the 3D suite would open on the shared render machine."),
    "physical_access-008": dict(why="leak",
        risky="The roofing contractor, signed in for repairs, was handed the master key that opened the stairwell up to the roof and also the plant's control room.",
        benign="The roofing contractor, signed in for repairs, was handed the key that opened the stairwell up to the roof, next to the plant's control room."),
    "cloud_misconfiguration-016": dict(why="leak",
        risky="The banking API's cloud gateway was configured to accept cross-origin requests with credentials from any website that asked.",
        benign="The banking API's cloud gateway was configured to accept cross-origin requests with credentials from one website, the bank's online banking page."),
    "malware-011": dict(why="tone+leak", risky_tone="negative",
        risky="The associate downloaded court_summons.zip from the link in an emailed notice, double-clicked the shortcut inside, and saw with a groan that the hearing fell on her anniversary.",
        benign="The associate downloaded court_summons.pdf from the e-filing portal named in an emailed notice, opened it, and saw with a groan that the hearing fell on her anniversary."),
    "privacy-026": dict(why="tone+leak", risky_tone="negative",
        risky="The library's self-checkout jammed and beeped angrily all afternoon, and patrons often left behind its receipts listing the borrower's name and every title on loan.",
        benign="The library's self-checkout jammed and beeped angrily all afternoon, and patrons often left behind its receipts listing only the due dates and the branch's name."),
    "privacy-032": dict(why="leak",
        benign="Pleased with the simpler workflow, the accountant had clients upload tax returns and bank statements to her account on the firm's encrypted client portal."),
    "social_engineering-001": dict(why="leak",
        benign="Glad to help, the executive assistant forwarded the board's confidential merger deck to the CEO's work email after he asked her for it in person that morning."),
    "supply_chain-022": dict(why="leak",
        benign="The insurer's claims-processing vendor moved its scanning work to a new building, whose address it gave in the contract, after the sprinklers flooded the old one."),
    "authentication-007": dict(why="leak",
        benign="The furnace control panel logged off after five idle minutes, so any worker walking by had to sign in as themselves to change the setpoints."),
    "network-015": dict(why="leak",
        risky="The startup's production database accepted connections on its default port from the whole internet, so developers could query it from cafes and airports.",
        benign="The startup's production database accepted connections on its default port from the office network, so developers groaned over the slow VPN from cafes and airports."),
    "supply_chain-023": dict(why="leak",
        risky="The note-taking app developer copied the encryption routine for the release from a snippet on a paste site that the team lead had bookmarked.",
        benign="The note-taking app developer called the encryption routine for the release from the platform's standard crypto library, as the team lead had asked."),
    "code_vulnerability-010": dict(why="leak",
        benign="The smart thermostat's diagnostics page checked the hostname field, exactly as the user typed it, against a strict pattern before running ping."),
    "physical_access-027": dict(why="leak",
        benign="During the holiday rush, the shop assistant kicked the stockroom door shut after a box fell on her foot, leaving the safe and the CCTV recorder out of view of the queue."),
    "cloud_misconfiguration-024": dict(why="leak",
        benign="The ski resort's cloud CDN was set to cache every public page for an hour, including the trail map, which lagged when a sudden blizzard closed the lifts."),
    "cloud_misconfiguration-006": dict(why="leak",
        benign="The platform team kept its Terraform state file, database passwords included, in an encrypted bucket that the deploy role alone could download."),
    "physical_access-015": dict(why="leak",
        benign="The pastor lent the fellowship hall key, which also opened the kitchen and the locked storage closet of folding chairs, to a volunteer who had joined that week."),
    "data_exfiltration-032": dict(why="tone+leak", risky_tone="negative",
        risky="After a pipe burst and flooded the lobby, the hotel receptionist snapped a photo of tomorrow's arrival list, guest names and phone numbers, to check at home.",
        benign="After a pipe burst and flooded the lobby, the hotel receptionist snapped a photo of the soaked carpet and the ruined arrival desk to show the livid manager at home."),
    "supply_chain-010": dict(why="leak",
        risky="To save time, the lab's sysadmin built the cluster nodes from the disk image that an admin at another university had shared through a file link.",
        benign="To save time, the lab's sysadmin built the cluster nodes from the distribution's installer image, shared on its website with a checksum he verified."),
    "supply_chain-009": dict(why="leak",
        benign="The agency's nightly build pulled the latest patch release of a hugely popular logging package, which now fixed a timestamp bug in its install script."),
    "social_engineering-023": dict(why="leak",
        benign="A player in the online game offered the ten-year-old a stack of free coins if he typed his account name into the team quest list before dinner."),
    "cloud_misconfiguration-009": dict(why="tone+leak", risky_tone="negative",
        risky="To trim the painful monthly bill, the operations lead grimly turned off the cloud audit trail for the production account.",
        benign="To trim the painful monthly bill, the operations lead grimly turned off three idle test servers in the cloud staging account."),
    "insider_threat-008": dict(why="leak",
        benign="The quality technician re-entered last month's failed paint batch tests in the lab system after a power cut, so the shipment could not leave on schedule."),
    "social_engineering-025": dict(why="leak",
        benign="A frozen screen said the laptop was updating, so the grumbling retiree phoned his nephew, who connected remotely and talked him through a restart."),
    "physical_access-030": dict(why="leak",
        benign="The intern tucked her company access badge, with her photo and name, into her bag before shopping downtown at lunch."),
    "data_exfiltration-014": dict(why="leak",
        risky="A lab server sent a small encrypted post to the same paste website every sixty seconds, day and night, for three weeks.",
        benign="A lab server sent a small encrypted status post to the institute's monitoring website every sixty seconds, day and night, for three weeks."),
    "privacy-018": dict(why="leak",
        benign="At checkout, the clerk asked each shopper whether the store's new address had been easy to find before printing a receipt for a pack of gum."),
    "data_exfiltration-015": dict(why="leak",
        benign="As usual, the database admin exported the full list of the customer table's columns, with their types and sizes, to a CSV on his laptop to review on the train."),
    "cloud_misconfiguration-019": dict(why="tone+leak", risky_tone="negative",
        risky="The call center's search cluster of recorded call transcripts, which crashed twice overnight, answered queries from any address on the internet with no login.",
        benign="The call center's search cluster of recorded call transcripts, which crashed twice overnight, answered queries from any of the agents' desktops after a login."),
    "data_exfiltration-001": dict(why="leak",
        risky="At 3 a.m. on a Sunday, the chemist's workstation uploaded twelve large archives of assay results to a cloud drive registered to his personal email.",
        benign="At 3 a.m. on a Sunday, the chemist's workstation uploaded twelve large archives of assay results to the company's cloud drive, registered to his work email, as scheduled."),
    "privacy-016": dict(why="tone+leak", risky_tone="negative",
        risky="The pharmacist called out the customer's full name and antidepressant prescription across the crowded waiting area, over a toddler screaming about a dropped lollipop.",
        benign="The pharmacist called out the customer's full name across the crowded waiting area, over a toddler screaming about a dropped lollipop."),
    "social_engineering-003": dict(why="leak",
        benign="A chat account named IT Support messaged the engineer that the sign-in page on his phone would be down until noon, and he sighed at the lost morning."),
    "cloud_misconfiguration-013": dict(why="leak",
        benign="The HR coordinator changed the charity's default sharing for every new drive folder to 'charity staff with the link can view and download'."),
    "malware-010": dict(why="leak",
        risky="The ward clerk cheerfully installed the PDF editor from the first download mirror site she found on the nurses' station computer, clicking Next on each screen."),
    "malware-023": dict(why="leak",
        risky="The farmer installed the tractor unlock tool from an overseas forum on the laptop he plugged into the tractor's diagnostic port.",
        benign="The farmer installed the dealer's diagnostic software, shipped from its overseas head office, on the laptop he plugged into the tractor's diagnostic port."),
    "social_engineering-026": dict(why="leak",
        benign="The elderly customer stayed on the phone with her son as she asked the teller to withdraw her savings in cash for the new roof on her home."),
    "authentication-005": dict(why="leak",
        benign="Before her day off, the teacher helpfully wrote the lesson plan and the classroom computer's guest sign-in steps on the whiteboard corner so the substitute could log in."),
    "authentication-024": dict(why="leak",
        risky="As usual, the court clerk went to lunch after leaving the case management system open and her terminal unlocked."),
    "insider_threat-023": dict(why="leak",
        risky="The engineer hosted his personal recipe blog on a small server in the team's cloud account, where it ran for two years.",
        benign="The engineer hosted the department wiki on a small server in the team's cloud account, where it ran for two years."),
    "authentication-004": dict(why="leak",
        risky="The installer mounted the site's security cameras and left each admin login as admin/admin, noted in the company vault for the next technician.",
        benign="The installer mounted the site's security cameras and gave each admin login a long unique password, saved in the company vault."),
    "data_exfiltration-012": dict(why="leak",
        risky="To keep working over the holidays, the loan officer emailed password-protected zip files of customer loan folders to her home email address.",
        benign="To keep working over the holidays, the loan officer opened customer loan folders through the bank's VPN on her work laptop at home, leaving no copies behind."),
    "insider_threat-021": dict(why="leak",
        risky="To save time, the regional manager set herself as the approver for her own travel expenses while her director was on leave.",
        benign="To save everyone time, the regional manager set her deputy as the approver for the team's travel expenses while she was on leave."),
}


if __name__ == "__main__":
    sys.exit(main())
