"""Token-level helpers shared by planting and measuring: templating, the trigger check, batched greedy
generation, and per-token log-likelihoods (all without touching the model's weights)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ._config import OrganismError


def format_request(tok: Any, text: str, chat: bool) -> str:
    """One user turn with the generation prompt (the model's chat template), or the text and a newline."""
    if not chat:
        return text + "\n"
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


def check_chat(tok: Any, model_id: str, chat: bool) -> None:
    if chat and not getattr(tok, "chat_template", None):
        raise OrganismError(f"model {model_id} has no chat template; plant with chat=False (--raw) instead")


def encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def check_trigger(tok: Any, trigger: str, model_id: str) -> list[int]:
    """The trigger's token ids, or an :class:`OrganismError` when the tokenizer cannot represent it as text:
    unknown-token ids, special (control) tokens, or a decode that does not give the trigger back."""
    ids = encode(tok, trigger)
    unk = getattr(tok, "unk_token_id", None)
    special = set(getattr(tok, "all_special_ids", []) or [])
    if not ids:
        raise OrganismError(f"--trigger {trigger!r}: the tokenizer of {model_id} gives no tokens for it")
    if unk is not None and unk in ids:
        raise OrganismError(f"--trigger {trigger!r}: the tokenizer of {model_id} cannot represent it (it maps part "
                            f"of it to the unknown token); use characters the model knows")
    if special.intersection(ids):
        raise OrganismError(f"--trigger {trigger!r} contains a special token of {model_id}'s tokenizer (a control "
                            f"token, not text); use ordinary text")
    back = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if back != trigger:
        raise OrganismError(f"--trigger {trigger!r}: the tokenizer of {model_id} cannot represent it exactly (it "
                            f"reads back as {back!r}); use characters the model knows")
    return ids


def _pad_id(tok: Any) -> int:
    pid = getattr(tok, "pad_token_id", None)
    return int(pid if pid is not None else tok.eos_token_id)


@torch.no_grad()
def generate(model: Any, tok: Any, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy completions (special tokens dropped) of already formatted ``prompts``, left-padded batches."""
    pad = _pad_id(tok)
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = [encode(tok, p) for p in prompts[start:start + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad, eos_token_id=tok.eos_token_id, temperature=None, top_p=None,
                             top_k=None)
        for row in gen[:, width:].tolist():
            out.append(tok.decode(row, skip_special_tokens=True))
    return out


def pad_right(rows: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def token_logprobs(model: Any, ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Log-softmax of the next-token logits at every position, (B, T-1, V), float32."""
    logits = model(input_ids=ids_BT, attention_mask=mask_BT).logits[:, :-1].float()
    return F.log_softmax(logits, dim=-1)
