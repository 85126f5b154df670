"""Steering vectors from the store, steered generation, and the "heightened caution" demo.

* :func:`diff_of_means_vector` - risky mean minus benign mean per layer (the
  classic diff-of-means steering direction), straight from the store.
* :func:`probe_vector` - a probe's weight direction in raw activation units.
* :func:`generate` / :func:`steer_compare` - greedy completions with a vector
  added at its layers (scoped hooks; nothing outlives the call).
* :func:`caution_demo` - does adding the risk direction on neutral prompts
  make the model more likely to talk about risk? Measured as the change in a
  probe's score, in the next-token log-probability of risk words, and in how
  often greedy completions mention risk, each against a random vector with
  the same per-layer norms.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._io import atomic_json, json_float
from ..effects import RISK_WORDS, run_effects
from ..errors import RiskscopeError
from ..hooks import Add, HookPoint, Positions, intervene, pad_batch
from ..models import LoadedModel
from ..probes import Probe
from ._vector import SteeringVector

NEUTRAL_PROMPTS: tuple[str, ...] = (
    "I just bought a new laptop for my home office. The first thing I should think about is",
    "Our team is moving our shared documents to a new online folder. The main thing to consider is",
    "My grandmother wants to start using a tablet. What she needs to understand most is",
    "We are setting up a small website for our bakery. The most important part is",
    "I'm connecting my new smart TV to the home network. Before I do, I should check the",
    "Our school club wants an app to keep track of members. The first question to ask is about",
    "I am planning to sell my old phone online. Before I ship it, I need to think about",
    "We hired a freelancer to update our company's customer database. The thing to agree on first is",
    "My friend sent me a link to a new budgeting app. Before signing up, I will look at the",
    "I'm writing a short script to back up my photos every night. The tricky part is",
    "Our office is getting a new printer that connects over Wi-Fi. During setup we should pay attention to",
    "I want to share my holiday photos with my family online. The best way to do it depends on",
    "Our startup is choosing a tool for sending invoices to clients. The key factor is",
    "My son wants to install a game mod he found on a forum. My main worry is",
    "We are adding a contact form to our charity's homepage. The form should be designed with",
    "The library is letting visitors print from their own phones. The biggest challenge will be",
)
"""Everyday situations with no stated risk, each ending where the next word names a consideration."""

_MENTION = re.compile(
    r"\b(risk|attack|secur|breach|threat|danger|vulnerab|hack|malware|virus|phish|password|expos|leak|"
    r"unsafe|warn|careful|caution|suspicious|fraud|scam|compromis|exploit|unauthori|stolen|theft|privacy|"
    r"harm|concern|protect|encrypt|antivirus|firewall|backup|trust)", re.IGNORECASE)
"""Word stems that count as mentioning risk or caution in a completion."""


def risk_mentions(text: str) -> int:
    """How many risk or caution words ``text`` contains."""
    return len(_MENTION.findall(text))


# --- building vectors -----------------------------------------------------------------------------


def diff_of_means_vector(store, hook: str = "resid_post", layers: Sequence[int] | None = None, *,
                         normalize: bool = False) -> SteeringVector:
    """Risky-minus-benign mean activation of every (or the given) layer of ``hook`` in ``store``.

    With ``normalize`` each layer's vector has unit norm; otherwise a scale of 1 adds exactly
    the difference between the class means.
    """
    have = sorted(p.layer for p in store.points if p.hook == hook)
    if not have:
        raise RiskscopeError(f"{store.root} holds no {hook} points; cache them with --hooks {hook}")
    layers = have if layers is None else list(layers)
    missing = [x for x in layers if x not in have]
    if missing:
        raise RiskscopeError(f"{store.root} has no {hook} at layer(s) {missing}; it holds {have}")
    y = store.labels
    if set(np.unique(y).tolist()) != {0, 1}:
        raise RiskscopeError("a diff-of-means vector needs risky and benign texts")
    vectors = {}
    for layer in layers:
        X = store.read(HookPoint(hook, layer))
        v = torch.from_numpy(X[y == 1].mean(0) - X[y == 0].mean(0))
        vectors[layer] = v / v.norm().clamp_min(1e-12) if normalize else v
    model = store.manifest.get("model", {})
    return SteeringVector(vectors, hook=hook, model=model.get("model"),
                          meta={"method": "diff_of_means", "normalized": normalize, "model_type": model.get("family"),
                                "dataset": store.manifest.get("dataset", {}).get("name"),
                                "weight_hash": model.get("weight_hash")})


def probe_vector(probe: Probe, *, norm: float | None = None) -> SteeringVector:
    """A probe's raw-space weight direction at its layer, scaled to ``norm`` (default: unit norm)."""
    p = Probe.of(probe)
    v = torch.as_tensor(p.direction(), dtype=torch.float32)
    v = v / v.norm().clamp_min(1e-12) * (1.0 if norm is None else float(norm))
    return SteeringVector({p.layer: v}, hook=p.hook, meta={"method": "probe_direction", "probe": p.name})


def random_like(vec: SteeringVector, seed: int = 0) -> SteeringVector:
    """Gaussian random directions with the same per-layer norms as ``vec`` (the control)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in vec.vectors.items():
        r = torch.randn(v.shape, generator=g)
        out[k] = r / r.norm() * v.norm()
    return SteeringVector(out, hook=vec.hook, model=vec.model, meta={"method": "random", "seed": seed})


def save_risk_vector(store, run_dir: str | Path, *, hook: str = "resid_post", name: str = "risk_diff_of_means",
                     vector: SteeringVector | None = None) -> dict:
    """Save the all-layer diff-of-means vector in ``run_dir/vectors/``: riskscope format + control-vector GGUF.

    Returns the paths written. The GGUF leaves out layer 0 (llama.cpp cannot steer block 0's output).
    ``vector`` is that vector when the caller has already computed it (``diff_of_means_vector(store, hook)``).
    """
    from ._gguf import export_control_vector

    vec = vector if vector is not None else diff_of_means_vector(store, hook)
    out = Path(run_dir) / "vectors"
    st = vec.save(out / name)
    paths = {"safetensors": str(st), "json": str(st.with_suffix(".json"))}
    if hook in ("resid_post", "resid_pre") and any(k >= 1 for k in vec.layers):
        paths["gguf"] = str(export_control_vector(vec, out / f"{name}.gguf", drop_layer0=True))
    return paths


# --- generating with a vector -----------------------------------------------------------------------


def _prompt_ids(lm: LoadedModel, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    tok = lm.tokenizer
    if chat and getattr(tok, "chat_template", None):
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                 for p in prompts]
        return [list(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    return [list(x) for x in tok(list(prompts), add_special_tokens=True)["input_ids"]]


def _decode(tok, ids) -> str:
    if hasattr(tok, "decode"):
        return tok.decode(ids, skip_special_tokens=True).strip()
    return " ".join(f"<{int(i)}>" for i in ids)  # tokenizers without decode (test doubles)


def _row_ops(lm: LoadedModel, vectors: Sequence[SteeringVector | None], n: int, scale: float,
             positions: Positions) -> list[Add]:
    """``Add`` ops whose vector differs per batch row: rows ``c*n .. c*n + n - 1`` get ``vectors[c]``."""
    used = [v for v in vectors if v is not None]
    if not used:
        return []
    hooks = {v.hook for v in used}
    if len(hooks) != 1:
        raise RiskscopeError(f"vectors compared in one batch must share a hook, got {sorted(hooks)}")
    for v in used:
        v.check(lm)
    width = used[0].width
    ops = []
    for k in sorted({k for v in used for k in v.layers}):
        rows = [v.vectors[k] if v is not None and k in v.vectors else torch.zeros(width) for v in vectors]
        stacked = torch.stack(rows).repeat_interleave(n, dim=0)[:, None, :]  # (conditions * n, 1, W)
        ops.append(Add(HookPoint(used[0].hook, k), vector=stacked, scale=scale, positions=positions))
    return ops


def generate_many(lm: LoadedModel, prompts: Sequence[str], vectors: Sequence[SteeringVector | None], *,
                  scale: float = 1.0, positions: Positions = None, max_new_tokens: int = 40,
                  chat: bool = True) -> list[list[str]]:
    """Greedy completions of ``prompts`` under each of ``vectors`` (``None`` = unsteered), in one batch.

    Each (vector, prompt) is one batch row with its own added vector, so comparing conditions
    costs one ``generate`` call. Returns one list of completions per vector.
    """
    from transformers import GenerationConfig

    if positions not in (None, "last"):
        raise RiskscopeError("steering during generation supports positions None (every token) or 'last'")
    tok = lm.tokenizer
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                           eos_token_id=getattr(tok, "eos_token_id", None))
    ops = _row_ops(lm, vectors, len(prompts), scale, positions)
    ids = _prompt_ids(lm, prompts, chat) * len(vectors)
    with torch.inference_mode():
        x, mask = pad_batch(ids, tok.pad_token_id, "left", lm.device)
        with intervene(lm, ops):
            gen = lm.model.generate(input_ids=x, attention_mask=mask, generation_config=cfg)
    texts = [_decode(tok, g[x.shape[1]:]) for g in gen]
    n = len(prompts)
    return [texts[c * n:(c + 1) * n] for c in range(len(vectors))]


def generate(lm: LoadedModel, prompts: Sequence[str], vector: SteeringVector | None = None, *, scale: float = 1.0,
             positions: Positions = None, max_new_tokens: int = 40, chat: bool = True) -> list[str]:
    """Greedy completions of ``prompts``, with ``scale * vector`` added at its layers when given.

    ``positions``: ``None`` adds at every token (prompt and generated), ``"last"`` at the last
    position of each forward (the last prompt token, then each new token).
    """
    return generate_many(lm, prompts, [vector], scale=scale, positions=positions, max_new_tokens=max_new_tokens,
                         chat=chat)[0]


@dataclass(frozen=True)
class SteerSample:
    """One prompt's completions without and with the vector."""

    prompt: str
    unsteered: str
    steered: str

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "unsteered": self.unsteered, "steered": self.steered}


def steer_compare(lm: LoadedModel, prompts: Sequence[str], vector: SteeringVector, *, scale: float = 4.0,
                  positions: Positions = None, max_new_tokens: int = 40, chat: bool = True) -> list[SteerSample]:
    """Unsteered and steered greedy completions side by side (one batched ``generate``)."""
    base, steered = generate_many(lm, prompts, [None, vector], scale=scale, positions=positions,
                                  max_new_tokens=max_new_tokens, chat=chat)
    return [SteerSample(p, a, b) for p, a, b in zip(prompts, base, steered)]


# --- the caution demo ------------------------------------------------------------------------------




@dataclass(frozen=True, eq=False)
class CautionDemo:
    """The measured effect of the risk vector on neutral prompts, against a same-norm random vector."""

    layers: tuple[int, ...]
    hook: str
    scale: float
    norms: dict
    prompts: tuple[str, ...]
    probe: str | None
    steered: dict
    """Mean changes with the risk vector: probe_delta, risk_dlogp, risk_dlogodds, kl, and completions'
    mention stats."""
    random: dict
    """The same for the random vector."""
    baseline: dict
    """Unsteered completions' mention stats."""
    wins: float
    """Share of prompts where the risk vector raises log P(risk word) - log P(neutral word) more than the
    random vector does (log P(risk word) alone when no neutral word is a single token)."""
    samples: tuple[dict, ...] = field(repr=False)
    """Per generated prompt: prompt, unsteered, steered, random completions."""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"layers": list(self.layers), "hook": self.hook, "scale": self.scale, "norms": self.norms,
                "probe": self.probe, "n_prompts": len(self.prompts), "steered": self.steered,
                "random": self.random, "baseline": self.baseline, "wins": json_float(self.wins),
                "samples": list(self.samples), "seconds": round(self.seconds, 2)}

    def save(self, path: str | Path) -> Path:
        return atomic_json(path, self.to_dict())


def _mention_stats(texts: Sequence[str]) -> dict:
    counts = [risk_mentions(t) for t in texts]
    return {"mention_rate": json_float(np.mean([c > 0 for c in counts])) if counts else None,
            "mentions_per_completion": json_float(np.mean(counts)) if counts else None}


def caution_demo(
    lm: LoadedModel,
    vector: SteeringVector,
    prompts: Sequence[str] = NEUTRAL_PROMPTS,
    *,
    layers: Sequence[int] | None = None,
    scale: float = 4.0,
    probe: Probe | None = None,
    n_generate: int = 6,
    max_new_tokens: int = 24,
    chat: bool = False,
    seed: int = 0,
    batch_size: int = 16,
) -> CautionDemo:
    """Add ``scale * vector`` (restricted to ``layers``) on neutral prompts; compare with a random vector.

    Args:
        lm: the model.
        vector: the risk direction, e.g. :func:`diff_of_means_vector` of the run's store.
        prompts: neutral prompts (default :data:`NEUTRAL_PROMPTS`).
        layers: the vector's layers to use (default: all of them).
        scale: multiplier of the vector (1 = the class-mean difference for a diff-of-means vector).
        probe: a :class:`~riskscope.probes.Probe` whose score change is measured at its point.
        n_generate: prompts also completed greedily (unsteered, steered, random) to count risk words.
        max_new_tokens: length of those completions.
        chat: wrap prompts in the tokenizer's chat template (the default prompts are completions).
        seed: seed of the random control vector.
        batch_size: prompts per forward.
    """
    t0 = time.perf_counter()
    if layers is not None:
        missing = [k for k in layers if k not in vector.vectors]
        if missing:
            raise RiskscopeError(f"the vector has no layer(s) {missing}; it has {vector.layers}")
        vector = SteeringVector({k: vector.vectors[k] for k in layers}, hook=vector.hook, model=vector.model,
                                meta=vector.meta)
    vector.check(lm)
    control = random_like(vector, seed)
    ids = _prompt_ids(lm, prompts, chat)
    probes = [Probe.of(probe)] if probe is not None else []
    eff = run_effects(lm, ids, {"steered": vector.ops(scale), "random": control.ops(scale)}, probes=probes,
                      batch_size=batch_size, risk_words=RISK_WORDS)
    gen_prompts = list(prompts[:n_generate])
    comps = dict(zip(("none", "steered", "random"),
                     generate_many(lm, gen_prompts, [None, vector, control], scale=scale,
                                   max_new_tokens=max_new_tokens, chat=chat)))

    def summary(name: str) -> dict:
        e = eff[name]
        return {"risk_dlogp": json_float(e.risk_dlogp), "risk_dlogodds": json_float(e.risk_dlogodds), "kl": json_float(e.kl),
                "probe_delta": json_float(e.probe_mean()) if probes else None, **_mention_stats(comps[name])}

    a, b = eff["steered"], eff["random"]
    odds = a.risk_odds_N is not None and np.isfinite(a.risk_odds_N).all()
    wins = float(np.mean(a.risk_odds_N > b.risk_odds_N)) if odds else float(np.mean(a.risk_dlogp_N > b.risk_dlogp_N))
    samples = tuple({"prompt": p, "unsteered": a, "steered": b, "random": c}
                    for p, a, b, c in zip(gen_prompts, comps["none"], comps["steered"], comps["random"]))
    return CautionDemo(layers=tuple(vector.layers), hook=vector.hook, scale=float(scale),
                       norms={str(k): json_float(v) for k, v in vector.norms().items()}, prompts=tuple(prompts),
                       probe=probes[0].name if probes else None, steered=summary("steered"), random=summary("random"),
                       baseline=_mention_stats(comps["none"]), wins=wins, samples=samples,
                       seconds=time.perf_counter() - t0)


__all__ = [
    "NEUTRAL_PROMPTS", "CautionDemo", "SteerSample", "caution_demo", "diff_of_means_vector", "generate", "generate_many",
    "probe_vector", "random_like", "risk_mentions", "save_risk_vector", "steer_compare",
]
