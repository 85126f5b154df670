"""Where the compared activations come from: in-memory arrays or an activation store, one row per text.

A source is a list of named layers over the same ``n_rows`` rows. :meth:`rows` returns the
given rows of every layer (the streaming metrics ask for one block of rows at a time);
:meth:`layer` returns one layer whole (SVCCA and RSA, which need every row at once).

>>> import numpy as np
>>> src = ArraySource({"resid_post.0": np.zeros((5, 3)), "resid_post.1": np.ones((5, 3))})
>>> src.n_rows, src.layers, src.rows(np.array([0, 2]))[1].shape
(5, ['resid_post.0', 'resid_post.1'], (2, 3))
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Store
from ..errors import RiskscopeError


class ArraySource:
    """Layers held in memory: ``{name: (n_rows, width)}``, every array with the same rows."""

    def __init__(self, arrays: dict[str, np.ndarray], name: str = "arrays"):
        if not arrays:
            raise RiskscopeError(f"{name}: no layers to compare")
        shapes = {k: np.shape(v) for k, v in arrays.items()}
        bad = [k for k, s in shapes.items() if len(s) != 2]
        if bad:
            raise RiskscopeError(f"{name}: layer {bad[0]} has shape {shapes[bad[0]]}; expected (rows, width)")
        if len({s[0] for s in shapes.values()}) != 1:
            raise RiskscopeError(f"{name}: layers have different numbers of rows: {sorted(set(shapes.values()))}")
        self.name = name
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.layers = list(arrays)
        self.n_rows = int(next(iter(shapes.values()))[0])
        self.widths = {k: int(s[1]) for k, s in shapes.items()}
        self.n_tokens: np.ndarray | None = None

    def rows(self, idx: np.ndarray) -> list[np.ndarray]:
        """Rows ``idx`` of every layer, in layer order."""
        return [self.arrays[k][idx] for k in self.layers]

    def layer(self, key: str) -> np.ndarray:
        """One layer, every row."""
        return self.arrays[key]


class StoreSource:
    """Layers of an activation store with ``last`` or ``mean`` positions (one row per text, dataset order)."""

    def __init__(self, store: Store | str | Path, layers: list[str] | None = None, name: str | None = None):
        st = store if isinstance(store, Store) else Store.open(store)
        pos = st.manifest.get("positions")
        if pos not in ("last", "mean"):
            raise RiskscopeError(f"{st.root} holds {pos!r} positions; layer comparison reads one row per text: "
                                 f"cache with --positions last or --positions mean")
        points = list(st.manifest["points"])
        missing = [k for k in layers or [] if k not in points]
        if missing:
            raise RiskscopeError(f"{st.root} has no point {missing[0]}; it holds {', '.join(points)}")
        self.store = st
        self.name = name or str(st.root)
        self.layers = list(layers) if layers else points
        self.n_rows = int(st.manifest["n_rows"])
        self.widths = {k: int(st.manifest["widths"][k]) for k in self.layers}
        self.n_tokens = np.array([r.get("n_tokens") or 0 for r in st.rows], dtype=np.int64)

    def rows(self, idx: np.ndarray) -> list[np.ndarray]:
        return [self.store.read_rows(k, idx) for k in self.layers]

    def layer(self, key: str) -> np.ndarray:
        return self.store.read(key)


class TokenSource(ArraySource):
    """Token-aligned rows of an ``all``-positions store: every token of every text is a row (texts in dataset
    order, tokens in text order). ``skip_first`` drops each text's first token (BOS or the attention-sink
    position, whose activations are orders of magnitude larger and would dominate every metric).

    Only two stores of one tokenizer have the same token rows (:func:`check_same_rows` compares each text's
    token count). The layers are read whole and held in memory: tokens x Σ widths float32.
    """

    def __init__(self, store: Store | str | Path, layers: list[str] | None = None, name: str | None = None,
                 skip_first: bool = True):
        st = store if isinstance(store, Store) else Store.open(store)
        if st.manifest.get("positions") != "all":
            raise RiskscopeError(f"{st.root} holds {st.manifest.get('positions')!r} positions; token-aligned rows "
                                 f"need a store cached with --positions all")
        points = list(st.manifest["points"])
        missing = [k for k in layers or [] if k not in points]
        if missing:
            raise RiskscopeError(f"{st.root} has no point {missing[0]}; it holds {', '.join(points)}")
        keys = list(layers) if layers else points
        cut = 1 if skip_first else 0
        arrays = {k: np.concatenate([x[cut:] for x in st.read_tokens(k)]) for k in keys}
        super().__init__(arrays, name or str(st.root))
        self.store = st
        self.skip_first = skip_first
        self.tokens_per_text = np.array([len(x) for x in st.read_tokens(keys[0])], dtype=np.int64) - cut
        self.n_tokens = None  # rows are tokens: no per-row length to block by


Source = ArraySource | StoreSource | TokenSource


def check_same_rows(a: Source, b: Source) -> None:
    """Refuse two sources that do not hold the same texts in the same order (for stores: same dataset rows;
    for token rows: also the same number of tokens in every text)."""
    if isinstance(a, TokenSource) != isinstance(b, TokenSource):
        raise RiskscopeError(f"{a.name} and {b.name}: one holds token rows, the other one row per text; cache both "
                             f"with the same --positions")
    stores = isinstance(a, (StoreSource, TokenSource)) and isinstance(b, (StoreSource, TokenSource))
    if stores:
        ta, tb = a.store.rows, b.store.rows
        if len(ta) != len(tb):
            raise RiskscopeError(f"{a.name} has {len(ta)} texts and {b.name} has {len(tb)}: compare stores cached "
                                 f"on the same dataset")
        for i, (x, y) in enumerate(zip(ta, tb)):
            if x.get("text") != y.get("text") or x.get("id") != y.get("id"):
                raise RiskscopeError(f"{b.store.root / 'rows.jsonl'}: line {i + 1}: row {y.get('id')!r} differs "
                                     f"from {a.store.root / 'rows.jsonl'} ({x.get('id')!r}); compare stores cached "
                                     f"on the same dataset")
    if isinstance(a, TokenSource) and isinstance(b, TokenSource):
        bad = np.nonzero(a.tokens_per_text != b.tokens_per_text)[0]
        if len(bad):
            i = int(bad[0])
            raise RiskscopeError(f"{b.store.root / 'rows.jsonl'}: line {i + 1}: the text has {b.tokens_per_text[i]} "
                                 f"token rows here and {a.tokens_per_text[i]} in {a.store.root}; token-aligned rows "
                                 f"need one tokenizer (use --readout mean or last across tokenizers)")
    if a.n_rows != b.n_rows:
        raise RiskscopeError(f"{a.name} has {a.n_rows} rows and {b.name} has {b.n_rows}: compare stores cached "
                             f"on the same dataset")


__all__ = ["ArraySource", "Source", "StoreSource", "TokenSource", "check_same_rows"]
