"""One SAE run end to end: check inputs, train (resumable), evaluate against baselines, save, write metrics.

Layout of the output folder ``DIR``::

    cfg.json, sae_weights.safetensors, sparsity.safetensors   the SAE, SAELens format
    metrics.json                                               written last (see docs/sae.md)
    checkpoints/                                               resumable training state
    random_init/                                               the same config trained on a randomly
                                                               initialised copy of the model (baseline)
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .._io import atomic_json, json_float
from ..data import Store
from ..errors import RiskscopeError
from ..hooks import HookPoint
from ..models import LoadedModel, resolve_layout
from ._config import SAEConfig
from ._corpus import DEFAULT_CORPUS, Corpus, load_corpus
from ._formats import CFG, save_saelens, tl_hook_name
from ._metrics import sae_eval, splice_metrics
from ._model import SparseAutoencoder
from ._source import LiveSource, StoreSource, capture_windows, corpus_windows, special_tokens_added
from ._train import TrainProgress, TrainResult, train_sae_on

METRICS_FORMAT = "riskscope-sae-metrics/1"
_CAPTURE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RANDOM_INIT_SEED = 1_000_003  # offset from the SAE seed, so the copy never equals a seed-0 test model


@dataclass(frozen=True)
class SAERunConfig:
    """Where the activations come from and how the run is evaluated."""

    point: HookPoint
    """Hook point the SAE reads (``HookPoint("resid_post", 15)``)."""
    corpus: str = DEFAULT_CORPUS
    """Text corpus for live capture (``pydocs``, a .txt/.jsonl/.parquet file or ``hf:NAME``); unused with a store."""
    store: str | None = None
    """An activation store written with ``positions="all"`` to train from instead of the live model."""
    context: int = 128
    """Tokens per sequence fed to the model (special tokens included)."""
    model_batch: int = 16
    """Sequences per forward pass."""
    holdout: int = 32
    """Live corpus: the first this many windows are held out for evaluation, never trained on."""
    holdout_every: int = 20
    """Store: rows whose index is a multiple of this are held out for evaluation."""
    capture_dtype: str | None = None
    """Live corpus: run a copy of the model in this dtype (``bfloat16``, ``float16``, ``float32``) to capture the
    training activations (stored as float32); None: the model as loaded. Held-out metrics and the splice always
    use the model as loaded, and the held-out FVU is also reported on activations of the capture dtype."""
    prepend_bos: bool = True
    """Prepend the tokenizer's BOS to each window when it adds none itself (excluded from training)."""
    random_baseline: bool = True
    """Also train the same config on a randomly initialised copy of the model (arXiv 2501.17727)."""
    resume: bool = True
    """Continue from the checkpoint in ``DIR/checkpoints`` when there is one of the same config."""

    def __post_init__(self) -> None:
        for name in ("context", "model_batch", "holdout", "holdout_every"):
            if getattr(self, name) < 1:
                raise RiskscopeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.context < 8:
            raise RiskscopeError(f"context must be at least 8 tokens, got {self.context}")
        if self.capture_dtype is not None and self.capture_dtype not in _CAPTURE_DTYPES:
            raise RiskscopeError(f"capture_dtype must be one of {', '.join(_CAPTURE_DTYPES)}, got "
                                 f"{self.capture_dtype!r}")


@dataclass
class SAERun:
    """What :func:`train_sae` made."""

    sae: SparseAutoencoder
    metrics: dict
    out: Path


def _layout_paths(lm: LoadedModel) -> dict[str, str]:
    spec = lm.layout.spec
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)  # the module paths only
            if f.name not in ("family", "model_types") and isinstance(getattr(spec, f.name), str)}


def cast_copy(lm: LoadedModel, dtype: str | None) -> LoadedModel:
    """``lm`` itself when it already runs in ``dtype`` (or ``dtype`` is None), else a copy of it cast to
    ``dtype`` (same tokenizer and layout paths; ``lm`` is left untouched)."""
    if dtype is None or lm.model.dtype == _CAPTURE_DTYPES[dtype]:
        return lm
    model = copy.deepcopy(lm.model).to(dtype=_CAPTURE_DTYPES[dtype]).eval()
    model.requires_grad_(False)
    return dataclasses.replace(lm, model=model, layout=resolve_layout(model, _layout_paths(lm)),
                               info={**lm.info, "dtype": dtype})


def random_init_copy(lm: LoadedModel, seed: int = 0) -> LoadedModel:
    """A copy of ``lm``'s architecture with freshly initialised weights (same tokenizer and layout paths);
    the global RNG is left as it was."""
    import transformers

    paths = _layout_paths(lm)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(lm.model.config)
    model = model.to(device=lm.device, dtype=lm.model.dtype).eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=lm.tokenizer, layout=resolve_layout(model, paths),
                       model_id=f"{lm.model_id} (random init, seed {seed})",
                       weight_hash=f"random-init:{seed}:{lm.weight_hash}", info={"random_init_seed": seed})


def check_out_dir(out: Path) -> None:
    """Refuse a folder that holds something riskscope's SAE runs did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise RiskscopeError(f"{out} exists and is not a folder")
    ours = (out / "checkpoints" / "latest.json").is_file() or (out / CFG).is_file() and \
        "riskscope_version" in (out / CFG).read_text(encoding="utf-8", errors="replace")
    if any(out.iterdir()) and not ours:
        raise RiskscopeError(f"{out} exists and is not an SAE folder riskscope wrote; use an empty or new folder")


def _sources(lm: LoadedModel, cap: LoadedModel, cfg: SAEConfig, run: SAERunConfig):
    """(training source, evaluation windows, texts for the random-init baseline as a corpus); a live source
    captures with ``cap`` (``lm`` or its copy in the capture dtype)."""
    point = run.point.normalised(lm)
    if run.store is not None:
        store = Store.open(run.store)
        lead, trail = special_tokens_added(lm)
        src = StoreSource(store, point, lead, trail, run.holdout_every)
        src.check()
        if store.manifest.get("model", {}).get("weight_hash") not in (None, lm.weight_hash):
            raise RiskscopeError(f"{run.store} was cached from another model than {lm.model_id}")
        eval_corpus = Corpus(f"{run.store} (held-out rows)", lambda: iter(src.eval_texts()), {"kind": "store"})
        eval_windows = list(corpus_windows(lm, eval_corpus, run.context, prepend_bos=False))[:max(run.holdout, 1)]
        texts = src.train_texts()
        base_corpus = Corpus(f"{run.store} (training rows)", lambda: iter(texts), {"kind": "store"})
        return src, eval_windows, base_corpus
    corpus = load_corpus(run.corpus)
    src = LiveSource(cap, point, corpus, run.context, run.model_batch, cfg.block_tokens, run.holdout, run.prepend_bos)
    src.check()
    return src, src.eval_windows(), corpus


def _evaluate(lm: LoadedModel, cap: LoadedModel, point: HookPoint, res: TrainResult, windows,
              run: SAERunConfig) -> dict:
    x_eval = capture_windows(lm, point, windows, run.model_batch)
    m = {"model_dtype": str(lm.model.dtype).replace("torch.", ""),
         "capture_dtype": str(cap.model.dtype).replace("torch.", ""),
         "training": {"tokens": res.tokens, "steps": res.steps, "seconds_this_run": round(res.seconds, 2),
                      "tokens_per_second": json_float(res.tokens_per_second, 1),
                      "resumed_from_step": res.resumed_from_step, "normalization_factor": res.scale},
         "held_out": sae_eval(res.sae, x_eval),
         "held_out_capture_dtype": None,
         "dead": {"fraction": float(res.dead_F.float().mean()), "count": int(res.dead_F.sum()),
                  "window_tokens": None},
         "density": {"median": float(res.density_F.median()), "max": float(res.density_F.max()),
                     "fraction_above_0.1": float((res.density_F > 0.1).float().mean())},
         "splice": splice_metrics(lm, point, res.sae, windows, res.mean_D, batch_size=max(1, run.model_batch // 2))}
    if cap is not lm:  # the same held-out tokens, captured as the training tokens were
        m["held_out_capture_dtype"] = sae_eval(res.sae, capture_windows(cap, point, windows, run.model_batch))
    return m


def _metadata(lm: LoadedModel, point: HookPoint, cfg: SAEConfig, run: SAERunConfig, res: TrainResult,
              source: dict) -> dict:
    return {"model_name": lm.model_id, "hook_name": tl_hook_name(point), "hook_head_index": None,
            "context_size": run.context, "prepend_bos": run.prepend_bos, "dataset_path": source.get("corpus", {}).get(
                "name", source.get("store")), "exclude_special_tokens": True,
            "norm_scaling_factor": res.scale,
            "riskscope": {"point": str(point), "arch_trained": cfg.arch,
                          "normalize_activations_trained": cfg.normalize, "norm_scaling_factor": res.scale,
                          "model_weight_hash": lm.weight_hash, "config": cfg.to_dict(), "source": source}}


def _train_one(lm: LoadedModel, cap: LoadedModel, cfg: SAEConfig, run: SAERunConfig, out: Path, src, windows,
               stage: str, progress: Callable[[str, TrainProgress], None] | None) -> tuple[SparseAutoencoder, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    point = run.point.normalised(lm)
    source_desc = src.describe()
    source_id = f"{lm.weight_hash}|{source_desc}"
    res = train_sae_on(src, cfg, out / "checkpoints", resume=run.resume, source_id=source_id,
                       progress=(lambda p: progress(stage, p)) if progress else None)
    t1, c1 = time.perf_counter(), time.process_time()
    metrics = _evaluate(lm, cap, point, res, windows, run)
    if not isinstance(src, LiveSource):
        metrics["capture_dtype"] = None  # read from the store, in the dtype it was cached in
    metrics["dead"]["window_tokens"] = min(cfg.dead_window, res.tokens)
    save_saelens(res.sae, out, _metadata(lm, point, cfg, run, res, source_desc), res.density_F)
    t2, c2 = time.perf_counter(), time.process_time()
    metrics["timing"] = {  # this call only (a resumed run counts its own part)
        "seconds": round(t2 - t0, 2), "cpu_seconds": round(c2 - c0, 2),
        "train_seconds": round(res.seconds, 2), "train_cpu_seconds": round(res.cpu_seconds, 2),
        "activations_seconds": round(res.source_seconds, 2), "activations_cpu_seconds": round(res.source_cpu_seconds, 2),
        "sae_steps_seconds": round(res.seconds - res.source_seconds, 2),
        "sae_steps_cpu_seconds": round(res.cpu_seconds - res.source_cpu_seconds, 2),
        "eval_seconds": round(t2 - t1, 2), "eval_cpu_seconds": round(c2 - c1, 2)}
    metrics["history"] = res.history
    return res.sae, metrics


def train_sae(lm: LoadedModel, cfg: SAEConfig, run: SAERunConfig, out: str | Path,
              progress: Callable[[str, TrainProgress], None] | None = None) -> SAERun:
    """Train an SAE on ``run.point`` of ``lm`` and evaluate it; write everything to ``out`` (see module doc).

    ``progress(stage, p)`` is called after every step, ``stage`` being ``sae`` or ``random_init``.
    """
    t0 = time.perf_counter()
    out = Path(out)
    point = run.point.normalised(lm)
    if point.width(lm) != cfg.d_in:
        raise RiskscopeError(f"{point} of {lm.model_id} is {point.width(lm)} wide but the SAE config says "
                             f"d_in = {cfg.d_in}")
    check_out_dir(out)
    cap = cast_copy(lm, run.capture_dtype) if run.store is None else lm
    src, windows, base_corpus = _sources(lm, cap, cfg, run)
    if not windows:
        raise RiskscopeError("no held-out text to evaluate on; give a larger corpus or store")
    out.mkdir(parents=True, exist_ok=True)
    sae, metrics = _train_one(lm, cap, cfg, run, out, src, windows, "sae", progress)
    baseline: dict | None = None
    if run.random_baseline:
        del cap
        rand = random_init_copy(lm, RANDOM_INIT_SEED + cfg.seed)
        rand_cap = cast_copy(rand, run.capture_dtype)
        rsrc = LiveSource(rand_cap, point, base_corpus, run.context, run.model_batch, cfg.block_tokens,
                          holdout=0 if run.store else run.holdout, prepend_bos=run.prepend_bos)
        _, baseline = _train_one(rand, rand_cap, cfg, run, out / "random_init", rsrc, windows, "random_init",
                                 progress)
        del rand, rand_cap
    full = {"format": METRICS_FORMAT, "model": lm.model_id, "point": str(point), "hook_name": tl_hook_name(point),
            "config": cfg.to_dict(), "run": {**dataclasses.asdict(run), "point": str(point)},
            "source": src.describe(), **metrics,
            "random_init": baseline if baseline is not None else {"skipped": "random_baseline=False"},
            "seconds": round(time.perf_counter() - t0, 2)}
    atomic_json(out / "metrics.json", _finite(full))
    return SAERun(sae=sae, metrics=full, out=out)


def _finite(obj):
    """JSON-safe copy: non-finite floats become null (riskscope's one rule, :func:`json_float`)."""
    if isinstance(obj, float):
        return json_float(obj, None)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


__all__ = ["METRICS_FORMAT", "SAERun", "SAERunConfig", "cast_copy", "check_out_dir", "random_init_copy", "train_sae"]
