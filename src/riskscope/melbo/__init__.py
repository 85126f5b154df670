"""MELBO: unsupervised steering vectors and adapters that elicit latent behaviours.

Learn vectors theta (||theta|| = R) added to one layer's MLP output that maximise
``sum_i (sum_{t in I_i} ||Z_target(theta) - Z_target(0)||^p)^(1/q)``, many at once,
running only the layers between source and target; then judge them against random
vectors of the same norm, cluster the behaviours and save the run (``riskscope.report.write_melbo_report``
renders it as a page).

>>> from riskscope.melbo import MelboConfig
>>> MelboConfig(n_vectors=8, radius=12.0, p=4, q=4).ortho
'hard'

Learned vectors are :class:`~riskscope.steering.SteeringVector` values (hook ``mlp_out``),
so they can be applied with ``intervene(lm, v.ops())``, added, scaled and exported.
"""

from ._adapter import SteeringAdapter, perturb_rows
from ._config import EvalConfig, MelboConfig, Positions
from ._engine import SteeredSlice, encode_prompts, melbo_objective
from ._evaluate import cluster, mean_pairwise_distance, minilm_embedder, ngram_embedder
from ._reference import objective_direct, train_reference
from ._run import MelboResult, check_run_dir, load_adapters, load_vectors, run_melbo, save_run, train_melbo
from ._train import TrainResult

__all__ = [
    "EvalConfig", "MelboConfig", "MelboResult", "Positions", "SteeredSlice", "SteeringAdapter", "TrainResult",
    "check_run_dir", "cluster", "encode_prompts", "load_adapters", "load_vectors", "mean_pairwise_distance",
    "melbo_objective", "minilm_embedder", "ngram_embedder", "objective_direct", "perturb_rows", "run_melbo", "save_run",
    "train_melbo", "train_reference",
]
