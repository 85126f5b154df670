"""Sparse autoencoders (SAEs) on one layer's activations: train, evaluate against baselines, save and load.

* :class:`SAEConfig` (shape + training recipe) and :class:`SAERunConfig` (data + evaluation), frozen.
* :class:`SparseAutoencoder`: ReLU-L1, TopK (+AuxK), BatchTopK (runs as JumpReLU); :class:`SAEOutput`.
* :func:`train_sae`: from an activation store or the live model over a corpus, resumable, with
  held-out FVU / L0 / dead latents, CE loss recovered and KL against zero- and mean-ablation, and
  the same config on a randomly initialised copy of the model; writes a SAELens folder.
* :func:`train_sae_on`: the training loop on any source of activation blocks.
* :func:`save_saelens`, :func:`load_sae` (SAELens and sparsify folders), :func:`save_sparsify`.
* :func:`risk_features`: latents that tell risky texts from their twins (paired test + FDR), the probe
  direction against decoder rows, sparse vs dense probes, clamping against matched random latents.
* :func:`browser_data`: top contexts, histograms and output tokens of every latent for the feature browser.
* :func:`load_corpus`: the default ``pydocs`` corpus or the user's .txt / .jsonl / .parquet / hf: data.

>>> from riskscope.sae import SAEConfig
>>> SAEConfig(d_in=576, arch="batchtopk", k=32).d_sae
4608
"""

from ._browse import BROWSER_FORMAT, browser_data, logit_effects
from ._config import ARCHS, SAEConfig
from ._corpus import DEFAULT_CORPUS, Corpus, load_corpus
from ._formats import check_sae_width, load_sae, read_density, sae_point, save_saelens, save_sparsify, tl_hook_name
from ._metrics import reconstruction_metrics, sae_eval, splice_metrics
from ._model import SAEOutput, SparseAutoencoder, TrainOutput
from ._risk import FeatureAblation, RiskConfig, RiskFeatures, paired_rows, risk_features, risk_reading
from ._run import SAERun, SAERunConfig, check_out_dir, random_init_copy, train_sae
from ._source import LiveSource, StoreSource, Window, capture_windows, corpus_windows, special_tokens_added
from ._stats import benjamini_hochberg, cosine_null, grouped_probe_auc, paired_feature_stats, signed_rank_test
from ._texts import POOLS, PooledLatents, TextLatents, iter_text_latents, pooled_latents, text_windows
from ._train import TrainProgress, TrainResult, latest_checkpoint, train_sae_on

__all__ = [
    "BROWSER_FORMAT", "browser_data", "logit_effects", "POOLS", "FeatureAblation", "PooledLatents", "RiskConfig", "RiskFeatures", "TextLatents", "benjamini_hochberg",
    "cosine_null", "grouped_probe_auc", "iter_text_latents", "paired_feature_stats", "paired_rows", "pooled_latents",
    "read_density", "risk_features", "risk_reading", "sae_point", "signed_rank_test", "text_windows",
    "ARCHS", "Corpus", "DEFAULT_CORPUS", "LiveSource", "SAEConfig", "SAEOutput", "SAERun", "SAERunConfig",
    "SparseAutoencoder", "StoreSource", "TrainOutput", "TrainProgress", "TrainResult", "Window", "capture_windows",
    "check_out_dir", "check_sae_width", "corpus_windows", "latest_checkpoint", "load_corpus", "load_sae",
    "random_init_copy", "reconstruction_metrics", "sae_eval", "save_saelens", "save_sparsify",
    "special_tokens_added", "splice_metrics", "tl_hook_name", "train_sae", "train_sae_on",
]
