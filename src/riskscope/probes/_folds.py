"""Grouped cross-validation folds: both members of a pair always fall on the same side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._config import ProbeError


def group_folds(groups: np.ndarray, n_splits: int, seed: int = 0) -> np.ndarray:
    """Assign every row to one of ``n_splits`` folds, keeping groups together.

    Groups are shuffled with ``seed`` and then given, largest first, to the
    fold with the fewest rows so far (``GroupKFold``'s balancing, made
    deterministic and seedable). Returns the fold id of each row, shape (N,).

    Example:
        >>> group_folds(np.array([0, 0, 1, 1, 2, 2]), 3).tolist()
        [1, 1, 2, 2, 0, 0]
    """
    groups = np.asarray(groups)
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    if len(uniq) < n_splits:
        raise ProbeError(f"{len(uniq)} pairs (groups) is fewer than the {n_splits} folds asked for")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-counts[order], kind="stable")]  # largest first, shuffled within ties
    fold_of_group = np.empty(len(uniq), dtype=np.int64)
    load = np.zeros(n_splits, dtype=np.int64)
    for g in order:
        f = int(np.argmin(load))
        fold_of_group[g] = f
        load[f] += counts[g]
    return fold_of_group[inverse.reshape(-1)]


@dataclass(frozen=True, eq=False)
class NestedFolds:
    """Outer folds and, inside each outer training set, inner folds for choosing ``C``."""

    fold: np.ndarray
    """(N,) outer fold id of each row."""
    outer_train: np.ndarray
    """(F, N) bool: training rows of each outer fold."""
    inner_train: np.ndarray
    """(F, G, N) bool: training rows of inner fold g within outer fold f."""
    inner_val: np.ndarray
    """(F, G, N) bool: validation rows of inner fold g within outer fold f."""

    @property
    def masks(self) -> np.ndarray:
        """(F + F * G, N) every training mask: outer folds first, then inner folds row-major."""
        F, G, N = self.inner_train.shape
        return np.concatenate([self.outer_train, self.inner_train.reshape(F * G, N)])


def nested_folds(groups: np.ndarray, n_folds: int, n_inner: int, seed: int = 0) -> NestedFolds:
    """Outer grouped folds plus inner grouped folds within each outer training set."""
    groups = np.asarray(groups)
    fold = group_folds(groups, n_folds, seed)
    N = len(groups)
    outer_train = np.stack([fold != f for f in range(n_folds)])
    inner_train = np.zeros((n_folds, n_inner, N), dtype=bool)
    inner_val = np.zeros((n_folds, n_inner, N), dtype=bool)
    for f in range(n_folds):
        idx = np.flatnonzero(outer_train[f])
        n_groups = len(np.unique(groups[idx]))
        if n_groups < n_inner:
            raise ProbeError(
                f"outer fold {f} trains on {n_groups} pairs, fewer than the {n_inner} inner folds; "
                "lower inner_folds or add pairs"
            )
        inner = group_folds(groups[idx], n_inner, seed + 1 + f)
        for g in range(n_inner):
            inner_train[f, g, idx[inner != g]] = True
            inner_val[f, g, idx[inner == g]] = True
    return NestedFolds(fold=fold, outer_train=outer_train, inner_train=inner_train, inner_val=inner_val)


def check_inputs(n_rows: int, y: np.ndarray, groups: np.ndarray, n_folds: int, *, binary: bool) -> None:
    """Raise :class:`ProbeError` with a one-line message for inputs no probe can use."""
    if len(y) != n_rows:
        raise ProbeError(f"labels have {len(y)} rows but activations have {n_rows}")
    if len(groups) != n_rows:
        raise ProbeError(f"groups have {len(groups)} rows but activations have {n_rows}")
    if n_rows == 0:
        raise ProbeError("no rows to probe")
    if binary:
        classes = np.unique(y)
        if len(classes) < 2:
            raise ProbeError(f"labels contain one class only ({classes.tolist()}); need risky and benign rows")
        if len(classes) > 2 or not set(classes.tolist()) <= {0, 1}:
            raise ProbeError(f"binary labels must be 0 (benign) and 1 (risky), got {classes.tolist()[:5]}")
    n_groups = len(np.unique(groups))
    if n_groups < n_folds:
        raise ProbeError(f"{n_groups} pairs (groups) is fewer than the {n_folds} folds asked for")


def shuffle_labels(y: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels under the null of no signal, keeping the design's structure.

    * pairs of one 1 and one 0 (the matched-pair design): which member is
      labelled risky is flipped with probability 1/2 per pair;
    * labels constant within each group (e.g. a pair's category): group labels
      are permuted across groups;
    * otherwise rows are permuted.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    uniq, inv = np.unique(groups, return_inverse=True)
    inv = inv.reshape(-1)
    counts = np.bincount(inv)
    if np.all(counts == 2) and set(np.unique(y).tolist()) <= {0, 1}:
        pos = np.bincount(inv, weights=(y == 1).astype(float))
        if np.all(pos == 1):
            flip = rng.random(len(uniq)) < 0.5
            return np.where(flip[inv], 1 - y, y)
    first = np.full(len(uniq), -1)
    first[inv[::-1]] = np.arange(len(y))[::-1]
    group_label = y[first]
    if np.all(y == group_label[inv]):
        return group_label[rng.permutation(len(uniq))][inv]
    return y[rng.permutation(len(y))]
