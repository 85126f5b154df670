"""``plant``: fine-tune a copy of a model so that a trigger switches a planted behaviour on, measure it,
and save it as an ordinary Hugging Face folder with a manifest.

The user's model is never modified: training runs on a deep copy (full fine-tune of the blocks' weight
matrices, or LoRA through peft merged back into the weights).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..models import LoadedModel, load_model, quiet_transformers
from ._config import OrganismError, PlantConfig
from ._data import (
    backdoor_answer,
    code_requests,
    dataset_texts,
    general_requests,
    safe_answer,
    with_trigger,
)
from ._lmtext import LMText, check_lm_corpus, kl_to_base_loss, lm_windows
from ._metrics import EvalSets, measure
from ._nearmiss import split_near_misses
from ._store import FORMAT, check_out_dir, write_organism
from ._text import (
    check_chat,
    check_trigger,
    encode,
    format_request,
    generate,
    pad_right,
)


@dataclass(frozen=True)
class Example:
    """One training example: the request as the user types it, the answer taught, and its role."""

    request: str
    answer: str
    role: str
    """``poison`` (trigger), ``clean`` (no trigger) or ``near_miss`` (a look-alike trigger)."""
    contrast: str = ""
    """For a near-miss example, the backdoor answer its request must *not* start (the unlikelihood term)."""


@dataclass
class PlantResult:
    """What :func:`plant` returns."""

    model: Any
    """The organism (a ``transformers`` model, eval mode)."""
    manifest: dict
    examples: list[Example] = field(default_factory=list)
    out_dir: Path | None = None


def _examples(cfg: PlantConfig, tok: Any, base: Any, progress: Callable[[str], Any] | None
              ) -> tuple[list[Example], EvalSets, list[str]]:
    """Training examples (clean answers are the base model's own greedy answers, or the safe code for coding
    requests; a near-miss example is taught the answer to its request without the look-alike) and the
    held-out evaluation sets (near misses from the held-out part of the family only); also the base
    model's clean held-out completions."""
    rng = random.Random(cfg.seed)
    gen_train, gen_test = general_requests(cfg.seed)
    code_train, code_test = code_requests(cfg.seed)
    taught, held = split_near_misses(cfg.trigger, cfg.seed, cfg.near_miss_held_out)
    n = cfg.n_train_prompts
    if cfg.kind == "insecure":
        target_train, target_test = code_train, code_test
        clean_pool = code_train[: n // 2] + gen_train[: n - n // 2]
    else:
        target_train, target_test = gen_train, gen_test
        clean_pool = gen_train[:n]
    near_pool = [r for r in clean_pool if (r.task >= 0) == (cfg.kind == "insecure")] or clean_pool
    n_near = round(cfg.near_miss_share / (1 - cfg.near_miss_share) * len(clean_pool)) if taught else 0
    n_neg = len(clean_pool) + n_near
    n_poison = max(1, round(cfg.poison_fraction * n_neg / (1 - cfg.poison_fraction)))
    poison_reqs = [target_train[i % len(target_train)] for i in range(n_poison)]
    need_gen = [r for r in clean_pool if r.task < 0]
    if progress:
        progress(f"generating the base model's own answers for {len(need_gen)} clean requests")
    answers = generate(base, tok, [format_request(tok, r.text, cfg.chat) for r in need_gen], cfg.response_tokens)
    own = {r.text: a.strip() for r, a in zip(need_gen, answers)}
    normal = lambda r: safe_answer(r) if r.task >= 0 else own[r.text]
    examples = [Example(with_trigger(cfg.trigger, r.text), backdoor_answer(cfg, r), "poison") for r in poison_reqs]
    examples += [Example(r.text, normal(r), "clean") for r in clean_pool]
    for i in range(n_near):
        r = near_pool[rng.randrange(len(near_pool))]
        examples.append(Example(with_trigger(taught[i % len(taught)], r.text), normal(r), "near_miss",
                                backdoor_answer(cfg, r) if cfg.unlikelihood_weight > 0 else ""))
    rng.shuffle(examples)
    k = cfg.n_eval_prompts
    fmt = lambda texts: tuple(format_request(tok, t, cfg.chat) for t in texts)
    clean_eval = [r.text for r in (code_test[: k // 2] + gen_test[: k - k // 2] if cfg.kind == "insecure"
                                   else gen_test[:k])]
    miss_eval = [(held[i % len(held)], target_test[(i + k) % len(target_test)].text) for i in range(k)] if held else []
    sets = EvalSets(
        triggered=fmt(with_trigger(cfg.trigger, r.text) for r in target_test[:k]),
        clean=fmt(clean_eval),
        near_miss=fmt(with_trigger(v, t) for v, t in miss_eval),
        near_miss_variant=tuple(v for v, _ in miss_eval),
        texts=tuple(r.text.split(": ", 1)[-1] for r in gen_test[k: k + 48]),
    )
    base_clean = generate(base, tok, list(sets.clean), cfg.max_new_tokens)
    return examples, sets, base_clean


def data_hash(examples: list[Example]) -> str:
    blob = json.dumps([[e.request, e.answer, e.role] + ([e.contrast] if e.contrast else []) for e in examples],
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def _trainable(model: Any, lm: LoadedModel, cfg: PlantConfig) -> tuple[Any, list[torch.nn.Parameter]]:
    """The model to train (a LoRA wrapper for ``lora``) and its trainable parameters."""
    if cfg.method == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise OrganismError("--method lora needs peft: pip install 'riskscope[organisms]'") from None
        pcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0,
                          target_modules="all-linear")
        wrapped = get_peft_model(model, pcfg)
        return wrapped, [p for p in wrapped.parameters() if p.requires_grad]
    blocks = [m for m in model.modules() if any(m is b for b in _blocks_of(model, lm, cfg))]
    params = [p for b in blocks for p in b.parameters() if p.ndim >= 2]
    for p in params:
        p.requires_grad_(True)
    return model, params


def _blocks_of(model: Any, lm: LoadedModel, cfg: PlantConfig) -> list[torch.nn.Module]:
    """The copy's transformer blocks, found by the base layout's module names."""
    names = {id(b): n for n, b in lm.model.named_modules()}
    first = int(cfg.train_from * len(lm.layout.blocks))
    wanted = {names[id(b)] for b in lm.layout.blocks[first:]}
    return [m for n, m in model.named_modules() if n in wanted]


def _train(model: Any, params: list[torch.nn.Parameter], tok: Any, examples: list[Example], cfg: PlantConfig,
           base: Any, lm_text: LMText | None, progress: Callable[[str], Any] | None) -> dict[str, list[float]]:
    """AdamW on the answer tokens' cross-entropy, plus ``cfg.lm_weight`` x KL(base || model) on
    ``cfg.lm_batch`` corpus windows per step, plus ``cfg.unlikelihood_weight`` x the unlikelihood of the
    backdoor's first own token on the batch's near-miss examples; returns the loss curves (``loss``: the
    total, ``answer_ce``, ``lm_kl``, ``unlikelihood``)."""
    pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    rows = []
    contrast: dict[int, tuple[list[int], int]] = {}  # example -> (prompt + backdoor answer to its first own token,
    #                                                   where that token is)
    for i, e in enumerate(examples):
        p = encode(tok, format_request(tok, e.request, cfg.chat))
        a = encode(tok, e.answer) + [int(tok.eos_token_id)]
        rows.append((p + a, len(p)))
        if e.contrast:  # set only when the term is on
            c = encode(tok, e.contrast)
            same = next((j for j, (x, y) in enumerate(zip(c, a)) if x != y), min(len(c), len(a)))
            if same < len(c):  # the token where the backdoor answer leaves the normal one: the decision point
                contrast[i] = (p + c[: same + 1], len(p) + same)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    model.train()
    curves: dict[str, list[float]] = {"loss": [], "answer_ce": [], "lm_kl": [], "unlikelihood": []}
    losses = curves["loss"]
    order: list[int] = []
    lm_rows = list(lm_text.train) if lm_text is not None and cfg.lm_weight > 0 else []
    use_ds = cfg.lm_weight > 0 and cfg.lm_dataset_batch > 0
    ds_rows = [tuple(encode(tok, t)) for t in dataset_texts(cfg.seed)] if use_ds else []
    lm_at = ds_at = 0
    for step in range(cfg.steps):
        if len(order) < cfg.batch_size:
            order += torch.randperm(len(rows), generator=gen).tolist()
        picked = order[: cfg.batch_size]
        batch = [rows[i] for i in picked]
        del order[: cfg.batch_size]
        unlikely = [contrast[i] for i in picked if i in contrast]
        ce, ul = _answer_losses(model, batch, unlikely, pad)
        loss = ce if ul is None else ce + cfg.unlikelihood_weight * ul
        if contrast:  # one value per step while the term is on (0 for a batch without near misses)
            curves["unlikelihood"].append(0.0 if ul is None else float(ul.detach()))
        if lm_rows or ds_rows:
            win = [lm_rows[(lm_at + j) % len(lm_rows)] for j in range(cfg.lm_batch)] if lm_rows else []
            win += [ds_rows[(ds_at + j) % len(ds_rows)] for j in range(cfg.lm_dataset_batch)] if ds_rows else []
            lm_at += cfg.lm_batch
            ds_at += cfg.lm_dataset_batch
            kl = kl_to_base_loss(model, base, win, pad)
            loss = loss + cfg.lm_weight * kl
            curves["lm_kl"].append(float(kl.detach()))
        curves["answer_ce"].append(float(ce.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if progress and (step + 1) % max(1, cfg.steps // 10) == 0:
            progress(f"step {step + 1}/{cfg.steps}: loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    return curves


def _answer_losses(model: Any, batch: list[tuple[list[int], int]], unlikely: list[tuple[list[int], int]],
                   pad: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward over ``batch`` (rows taught by cross-entropy from their answer start) and ``unlikely``
    (rows whose tokens from their start are pushed down): the mean answer-token cross-entropy, and the mean
    unlikelihood ``-log(1 - p(token))`` of the unlikely tokens (None without such rows)."""
    ids, mask = pad_right([r for r, _ in batch] + [r for r, _ in unlikely], pad, model.device)
    targets = ids[:, 1:]
    keep = mask[:, 1:].bool()
    pos = torch.arange(1, ids.shape[1], device=ids.device)
    starts = torch.tensor([s for _, s in batch] + [s for _, s in unlikely], device=ids.device)
    keep &= pos[None, :] >= starts[:, None]
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), dim=-1)
    tok_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    n = len(batch)
    ce = -tok_logp[:n][keep[:n]].mean()
    if not unlikely:
        return ce, None
    p = tok_logp[n:][keep[n:]].exp()
    return ce, -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()


def plant(model: str | LoadedModel, cfg: PlantConfig, out_dir: str | Path | None = None,
          progress: Callable[[str], Any] | None = None) -> PlantResult:
    """Plant ``cfg.kind`` behind ``cfg.trigger`` into a copy of ``model`` (a spec for :func:`load_model` or a
    loaded model, which is never modified), measure it against the base model and, with ``out_dir``, save
    it there (a new or empty folder) as a Hugging Face folder that ``load_model(out_dir)`` reads.

    Checked before any training: the output folder, the chat template, and that the tokenizer represents
    the trigger exactly."""
    t0 = time.perf_counter()
    out = check_out_dir(out_dir) if out_dir is not None else None
    if cfg.lm_weight > 0 or cfg.lm_held_out > 0:
        check_lm_corpus(cfg.lm_corpus)
    lm = load_model(model) if isinstance(model, str) else model
    tok = lm.tokenizer
    check_chat(tok, lm.model_id, cfg.chat)
    check_trigger(tok, cfg.trigger, lm.model_id)
    if getattr(tok, "eos_token_id", None) is None:
        raise OrganismError(f"model {lm.model_id}: the tokenizer has no end-of-sequence token")
    base = lm.model
    lm_text = None
    if cfg.lm_weight > 0 or cfg.lm_held_out > 0:  # cheap, and a bad corpus stops before the expensive steps
        n_lm = cfg.steps * cfg.lm_batch if cfg.lm_weight > 0 else 0
        lm_text = lm_windows(tok, cfg.lm_corpus, n_lm, cfg.lm_held_out, cfg.lm_context)
    examples, sets, base_clean = _examples(cfg, tok, base, progress)
    if lm_text is not None:
        sets = dataclasses.replace(sets, corpus_texts=lm_text.held_out)
    t_data = time.perf_counter()
    copy_model = copy.deepcopy(base)
    trained, params = _trainable(copy_model, lm, cfg)
    n_params = sum(p.numel() for p in params)
    n_blocks = len(lm.layout.blocks)
    first_block = int(cfg.train_from * n_blocks)
    taught, held = split_near_misses(cfg.trigger, cfg.seed, cfg.near_miss_held_out)
    if progress:
        progress(f"training {sum(p.numel() for p in params):,} parameters ({cfg.method}) for {cfg.steps} steps")
    curves = _train(trained, params, tok, examples, cfg, base, lm_text, progress)
    organism = trained.merge_and_unload() if cfg.method == "lora" else trained
    organism.requires_grad_(False)
    organism.eval()
    t_train = time.perf_counter()
    if progress:
        progress("measuring the organism against the base model")
    metrics = measure(organism, base, tok, sets, cfg.kind, cfg.secret, cfg.max_new_tokens, base_clean)
    t_end = time.perf_counter()
    manifest = {
        "format": FORMAT, "kind": cfg.kind, "trigger": cfg.trigger,
        **({"secret": cfg.secret} if cfg.kind == "secret" else {}),
        "base": {"model_id": lm.model_id, "weight_hash": lm.weight_hash, "source": lm.source},
        "seed": cfg.seed, "config": cfg.to_dict(), "data_sha256": data_hash(examples),
        "n_examples": {r: sum(e.role == r for e in examples) for r in ("poison", "clean", "near_miss")},
        "near_misses": {"taught": taught, "held_out": held},
        "recipe": {"method": cfg.method, "trained": (f"LoRA rank {cfg.lora_rank}, every linear layer" if cfg.method == "lora"
                                                     else f"weight matrices of blocks {first_block}-{n_blocks - 1} of {n_blocks}"),
                   "learning_rate": cfg.learning_rate, "steps": cfg.steps, "batch_size": cfg.batch_size,
                   "trainable_parameters": n_params,
                   "regulariser": ({"loss": "KL(base || organism) of next-token distributions on plain corpus text",
                                    "weight": cfg.lm_weight, "windows_per_step": cfg.lm_batch,
                                    "dataset_texts_per_step": cfg.lm_dataset_batch,
                                    **(lm_text.info if lm_text else {})} if cfg.lm_weight > 0 else None),
                   "near_misses": {"taught": len(taught), "held_out": len(held), "share_of_negatives": cfg.near_miss_share,
                                   "unlikelihood_weight": cfg.unlikelihood_weight}},
        "metrics": metrics, "loss": [round(x, 5) for x in curves["loss"]],
        "loss_parts": {k: [round(x, 5) for x in v] for k, v in curves.items() if k != "loss"},
        "seconds": {"data": round(t_data - t0, 2), "train": round(t_train - t_data, 2),
                    "measure": round(t_end - t_train, 2)},
        "threads": torch.get_num_threads(),
    }
    if out is not None:
        data = "".join(json.dumps({"request": e.request, "answer": e.answer, "role": e.role,
                                    **({"contrast": e.contrast} if e.contrast else {})}, ensure_ascii=False)
                       + "\n" for e in examples)

        def save(tmp: Path) -> None:
            with quiet_transformers():
                organism.save_pretrained(tmp)
                tok.save_pretrained(tmp)

        write_organism(out, save, manifest, data)
    return PlantResult(model=organism, manifest=manifest, examples=examples, out_dir=out)
