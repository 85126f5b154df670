"""Hook points on a loaded model, scoped operations on them, and batched captures.

* :class:`HookPoint` names one place: ``HookPoint("mlp_neurons", 12)``.
* :class:`Set`, :class:`Add`, :class:`Clamp`, :class:`Scale`, :class:`Ablate` are frozen
  operations applied by :func:`intervene`, a context manager whose hooks never outlive it.
* :func:`capture` reads activations; :func:`on_activation` attaches any function, scoped;
  :func:`run_batch` runs one padded batch with its mask visible to position-aware hooks
  through a context variable (:func:`batch_mask`), so threads never see each other's batch.
* :func:`capture_texts` / :func:`iter_captures` capture many texts in length-sorted batches;
  :func:`check_texts` (used by both, and by :func:`run_texts`) refuses empty texts and texts
  longer than the model's context, or cuts them with ``truncate=True``.
* :class:`Readouts` / :data:`READOUTS`: last token, mean and max over content tokens, and the mean over
  the tokens where a pair's twins differ, several from one forward (``iter_captures(readouts=...)``).
* :class:`BlockReplay` records what every block received in one forward and re-runs blocks
  ``L..`` on edited inputs (interventions and MELBO use it).

>>> HookPoint("resid_post", -1)
HookPoint(hook='resid_post', layer=-1)
>>> str(HookPoint.parse("mlp_neurons.12"))
'mlp_neurons.12'
"""

from ._batch import batch_mask, current_mask, pad_batch, position_ids_for, position_index, tokenize
from ._capture import Captured, StopForward, capture, on_activation, run_batch, run_texts, stop_after
from ._checks import CheckedTexts, check_texts, check_token_ids
from ._extract import CapturedTexts, capture_texts, iter_captures
from ._ops import Ablate, Add, Clamp, Op, Scale, Set, intervene
from ._points import HOOKS, HookName, HookPoint, Positions, module_for
from ._readouts import READOUTS, Readouts, check_readouts, differing_tokens, reduce_readouts
from ._replay import BlockCall, BlockReplay

__all__ = [
    "HOOKS", "READOUTS", "Ablate", "Readouts", "check_readouts", "differing_tokens", "reduce_readouts", "Add", "BlockCall", "BlockReplay", "Captured", "CapturedTexts", "CheckedTexts", "Clamp",
    "HookName", "HookPoint", "Op", "Positions", "Scale", "Set", "StopForward", "batch_mask", "capture",
    "capture_texts", "check_texts", "check_token_ids", "current_mask", "intervene", "iter_captures",
    "module_for", "on_activation", "pad_batch", "position_ids_for", "position_index", "run_batch", "run_texts",
    "stop_after", "tokenize",
]
