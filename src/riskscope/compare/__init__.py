"""Compare models: layer similarity (CKA, SVCCA, RSA) with permutation nulls, from stores or arrays; risk-direction
transfer through a ridge map with a shuffled-map control; feature universality of two SAEs (latents paired by
activation correlation, SVCCA / RSA of the paired decoder rows against shuffled pairings).

>>> import numpy as np
>>> from riskscope.compare import ArraySource, cka_matrix
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(50, 8))
>>> res = cka_matrix(ArraySource({"x": X}), ArraySource({"y": X @ rng.normal(size=(8, 8))}), n_perm=20)
>>> res.values_AB.shape, bool(res.p_AB[0, 0] < 0.1)
((1, 1), True)

See ``docs/compare.md``.
"""

from ._cka import MIN_ROWS_DEBIASED, block_rows, cka_matrix, linear_cka, linear_cka_reference
from ._feature_run import (FEATURES_FORMAT, FeatureComparison, SAESide, check_inputs, compare_features, open_sae,
                           sae_model, same_tokenizer)
from ._features import (MIN_PAIRS, FeatureCompareConfig, FeaturePairing, LatentStats, NullTest, best_matches,
                        junk_reasons, pair_features, paired_rsa, paired_svcca)
from ._layers import (FORMAT, MIN_ROWS, RANDOM_INIT, LayerCompareConfig, LayerComparison, Metric, check_layers,
                      compare_layers, compare_sources)
from ._result import SimilarityMatrix, null_summary
from ._rsa import MIN_ROWS_RSA, rdm_ranks, rsa, rsa_matrix
from ._sources import ArraySource, Source, StoreSource, TokenSource, check_same_rows
from ._transfer import ALPHAS, SCORES, TransferResult, matched_layers, ridge_gcv, risk_transfer
from ._svcca import MIN_ROWS_SVCCA, svcca, svcca_matrix, svd_basis

__all__ = [
    "FEATURES_FORMAT", "FeatureComparison", "SAESide", "check_inputs", "compare_features", "open_sae", "sae_model",
    "same_tokenizer", "MIN_PAIRS", "FeatureCompareConfig", "FeaturePairing", "LatentStats", "NullTest",
    "best_matches", "junk_reasons", "pair_features", "paired_rsa", "paired_svcca",
    "FORMAT", "LayerCompareConfig", "LayerComparison", "MIN_ROWS", "Metric", "RANDOM_INIT", "check_layers",
    "compare_layers", "compare_sources", "ArraySource", "MIN_ROWS_DEBIASED", "MIN_ROWS_RSA", "MIN_ROWS_SVCCA", "SimilarityMatrix", "Source",
    "StoreSource", "TokenSource", "block_rows", "check_same_rows", "cka_matrix", "linear_cka", "linear_cka_reference",
    "null_summary", "ALPHAS", "SCORES", "TransferResult", "matched_layers", "ridge_gcv", "risk_transfer", "rdm_ranks", "rsa", "rsa_matrix", "svcca", "svcca_matrix", "svd_basis",
]
