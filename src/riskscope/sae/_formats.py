"""SAE folders on disk: SAELens's format (written and read) and EleutherAI sparsify's (read and written).

SAELens (6.x)::

    cfg.json                  d_in, d_sae, architecture (standard | topk | jumprelu), dtype, device,
                              apply_b_dec_to_input, normalize_activations, reshape_activations, k
                              (topk), metadata {model_name, hook_name, context_size, prepend_bos, ...}
    sae_weights.safetensors   W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in],
                              threshold [d_sae] (jumprelu)
    sparsity.safetensors      sparsity [d_sae]: log10 of each latent's firing density

riskscope saves weights that read *raw* activations: the normalisation factor is folded
in (as SAELens's own trainer does before saving), so ``normalize_activations`` is
``none`` and ``metadata.riskscope`` records the factor and how the SAE was trained.
ReLU-L1 is ``standard``; TopK is ``topk``; BatchTopK is ``jumprelu`` with the estimated
threshold for every latent.

sparsify::

    cfg.json                  k, num_latents or expansion_factor, activation, d_in, ...
    sae.safetensors           encoder.weight [n, d], encoder.bias [n], W_dec [n, d], b_dec [d]

sparsify's ``W_dec`` is already [d_sae, d_in] (SAELens's orientation): it is read as is, not
transposed. (SAELens's sparsify loader transposes it, which yields [d_in, d_sae].)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from .._io import atomic_json, save_safetensors
from .._version import __version__
from ..errors import RiskscopeError
from ..hooks import HookPoint
from ._model import SparseAutoencoder

SAELENS_WEIGHTS = "sae_weights.safetensors"
SAELENS_SPARSITY = "sparsity.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
CFG = "cfg.json"
SAELENS_FORMAT_VERSION = "6.0.0"  # the SAELens on-disk format written (cfg.json layout of sae-lens >= 6)
_ARCH_OUT = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
_ARCH_IN = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}
_TL_HOOKS = {"resid_pre": "blocks.{}.hook_resid_pre", "resid_post": "blocks.{}.hook_resid_post",
             "attn_out": "blocks.{}.hook_attn_out", "mlp_out": "blocks.{}.hook_mlp_out",
             "mlp_neurons": "blocks.{}.mlp.hook_post"}


def tl_hook_name(point: HookPoint) -> str:
    """The TransformerLens / SAELens name of a riskscope hook point (``resid_post.5`` -> ``blocks.5.hook_resid_post``)."""
    return _TL_HOOKS[point.hook].format(point.layer)


def save_saelens(sae: SparseAutoencoder, out: str | Path, metadata: dict | None = None,
                 density_F: torch.Tensor | None = None) -> Path:
    """Write ``sae`` to the folder ``out`` in SAELens's format (weights, cfg.json, sparsity)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arch = _ARCH_OUT[sae.arch]
    tensors = {"W_enc": sae.W_enc.detach(), "W_dec": sae.W_dec.detach(), "b_enc": sae.b_enc.detach(),
               "b_dec": sae.b_dec.detach()}
    if arch == "jumprelu":
        tensors["threshold"] = sae.threshold.detach()
    save_safetensors({k: v.float().contiguous() for k, v in tensors.items()}, out / SAELENS_WEIGHTS)
    if density_F is not None:
        save_safetensors({"sparsity": torch.log10(density_F.double() + 1e-10).float().contiguous()},
                         out / SAELENS_SPARSITY)
    meta = {"sae_lens_version": SAELENS_FORMAT_VERSION, "sae_lens_training_version": None,
            "riskscope_version": __version__, **(metadata or {})}
    cfg = {"d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
           "architecture": arch, "metadata": meta}
    if arch == "topk":
        cfg.update(k=sae.k, rescale_acts_by_decoder_norm=False)
    atomic_json(out / CFG, cfg)
    return out


def save_sparsify(sae: SparseAutoencoder, out: str | Path) -> Path:
    """Write a TopK ``sae`` in EleutherAI sparsify's format (for use with sparsify, and round-trip tests)."""
    if sae.arch != "topk":
        raise RiskscopeError(f"sparsify stores TopK SAEs only, not {sae.arch}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors({"encoder.weight": sae.W_enc.detach().t().contiguous(), "encoder.bias": sae.b_enc.detach(),
                      "W_dec": sae.W_dec.detach().contiguous(), "b_dec": sae.b_dec.detach()}, out / SPARSIFY_WEIGHTS)
    atomic_json(out / CFG, {"activation": "topk", "expansion_factor": max(1, sae.d_sae // sae.d_in),
                            "normalize_decoder": True, "num_latents": sae.d_sae, "k": sae.k, "multi_topk": False,
                            "skip_connection": False, "transcode": False, "d_in": sae.d_in})
    return out


def _read_cfg(path: Path) -> dict:
    f = path / CFG
    if not f.is_file():
        raise RiskscopeError(f"{path} is not an SAE folder (no {CFG})")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RiskscopeError(f"{f}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise RiskscopeError(f"{f}: expected a JSON object")
    return cfg


def _read_tensors(f: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(f), framework="pt") as h:
            return {k: h.get_tensor(k).float() for k in h.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated / corrupt files
        raise RiskscopeError(f"{f}: truncated or corrupt weights file ({type(e).__name__})") from None


def _int_field(cfg: dict, key: str, where: Path) -> int:
    v = cfg.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise RiskscopeError(f"{where / CFG}: field {key!r} must be a positive integer, got {v!r}")
    return v


def _shape(t: dict, name: str, shape: tuple[int, ...], f: Path) -> torch.Tensor:
    if name not in t:
        raise RiskscopeError(f"{f}: tensor {name!r} is missing")
    if tuple(t[name].shape) != shape:
        raise RiskscopeError(f"{f}: tensor {name!r} has shape {list(t[name].shape)}, expected {list(shape)}")
    if not bool(torch.isfinite(t[name]).all()):
        raise RiskscopeError(f"{f}: tensor {name!r} holds NaN or infinite values")
    return t[name]


def _load_saelens(path: Path, cfg: dict) -> SparseAutoencoder:
    arch_name = cfg.get("architecture", "standard")
    if not isinstance(arch_name, str) or arch_name not in _ARCH_IN:
        raise RiskscopeError(f"{path / CFG}: unknown architecture {arch_name!r}; riskscope reads "
                             f"{', '.join(sorted(_ARCH_IN))}")
    d_in, d_sae = _int_field(cfg, "d_in", path), _int_field(cfg, "d_sae", path)
    arch = _ARCH_IN[arch_name]
    k = _int_field(cfg, "k", path) if arch == "topk" else 1
    if arch == "topk" and k >= d_sae:
        raise RiskscopeError(f"{path / CFG}: k = {k} must be smaller than d_sae = {d_sae}")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise RiskscopeError(f"{path / CFG}: reshape_activations {cfg['reshape_activations']!r} is not supported")
    f = path / SAELENS_WEIGHTS
    if not f.is_file():
        raise RiskscopeError(f"{path}: no {SAELENS_WEIGHTS}")
    t = _read_tensors(f)
    sae = SparseAutoencoder(d_in, d_sae, arch, k)
    with torch.no_grad():
        sae.W_enc.copy_(_shape(t, "W_enc", (d_in, d_sae), f))
        sae.W_dec.copy_(_shape(t, "W_dec", (d_sae, d_in), f))
        sae.b_enc.copy_(_shape(t, "b_enc", (d_sae,), f))
        sae.b_dec.copy_(_shape(t, "b_dec", (d_in,), f))
        if arch == "jumprelu":
            sae.threshold.copy_(_shape(t, "threshold", (d_sae,), f))
        if not cfg.get("apply_b_dec_to_input", True):  # pre = x W + b = (x - b_dec) W + (b + b_dec W)
            sae.b_enc.add_(sae.b_dec @ sae.W_enc)
        if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
            norms = sae.W_dec.norm(dim=1)  # select on pre * |W_dec|, decode acts / |W_dec|: fold both in
            sae.W_enc.mul_(norms)
            sae.b_enc.mul_(norms)
            sae.W_dec.div_(norms[:, None])
    norm = cfg.get("normalize_activations", "none") or "none"
    if norm == "expected_average_only_in":
        factor = (cfg.get("metadata") or {}).get("norm_scaling_factor") or cfg.get("norm_scaling_factor")
        if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0:
            raise RiskscopeError(f"{path / CFG}: normalize_activations is expected_average_only_in but no "
                                 f"norm_scaling_factor is recorded, so raw activations cannot be read")
        sae.fold_input_scale(float(factor))
    elif norm != "none":
        raise RiskscopeError(f"{path / CFG}: normalize_activations {norm!r} is not supported (none or "
                             f"expected_average_only_in)")
    return sae


def _load_sparsify(path: Path, cfg: dict) -> SparseAutoencoder:
    if cfg.get("activation", "topk") != "topk":
        raise RiskscopeError(f"{path / CFG}: unknown architecture (sparsify activation {cfg.get('activation')!r}); "
                             f"riskscope reads topk")
    for flag in ("transcode", "skip_connection"):
        if cfg.get(flag):
            raise RiskscopeError(f"{path / CFG}: sparsify {flag} coders are not SAEs; riskscope does not read them")
    d_in, k = _int_field(cfg, "d_in", path), _int_field(cfg, "k", path)
    f = path / SPARSIFY_WEIGHTS
    t = _read_tensors(f)
    if "encoder.weight" not in t:
        raise RiskscopeError(f"{f}: tensor 'encoder.weight' is missing")
    d_sae = int(t["encoder.weight"].shape[0])
    if cfg.get("num_latents") and cfg["num_latents"] != d_sae:
        raise RiskscopeError(f"{path / CFG}: num_latents {cfg['num_latents']} but encoder.weight has {d_sae} rows")
    if k >= d_sae:
        raise RiskscopeError(f"{path / CFG}: k = {k} must be smaller than the {d_sae} latents")
    sae = SparseAutoencoder(d_in, d_sae, "topk", k)
    with torch.no_grad():
        sae.W_enc.copy_(_shape(t, "encoder.weight", (d_sae, d_in), f).t())
        sae.b_enc.copy_(_shape(t, "encoder.bias", (d_sae,), f) if "encoder.bias" in t else torch.zeros(d_sae))
        sae.W_dec.copy_(_shape(t, "W_dec", (d_sae, d_in), f))  # [n, d] already: no transpose
        sae.b_dec.copy_(_shape(t, "b_dec", (d_in,), f) if "b_dec" in t else torch.zeros(d_in))
    return sae


def load_sae(path: str | Path) -> tuple[SparseAutoencoder, dict]:
    """Read an SAE folder (SAELens or sparsify, told apart by their weight files) -> (sae, cfg.json)."""
    path = Path(path)
    if not path.is_dir():
        raise RiskscopeError(f"{path}: no such SAE folder")
    cfg = _read_cfg(path)
    if (path / SAELENS_WEIGHTS).is_file():
        sae = _load_saelens(path, cfg)
    elif (path / SPARSIFY_WEIGHTS).is_file():
        sae = _load_sparsify(path, cfg)
    else:
        raise RiskscopeError(f"{path}: no {SAELENS_WEIGHTS} (SAELens) or {SPARSIFY_WEIGHTS} (sparsify)")
    sae.requires_grad_(False)
    return sae, cfg


def sae_point(cfg: dict, where: str | Path = "cfg.json") -> HookPoint:
    """The riskscope hook point an SAE folder reads: ``metadata.riskscope.point``, else its TransformerLens
    ``hook_name`` (``blocks.15.hook_resid_post`` -> ``resid_post.15``)."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    ours = meta.get("riskscope") if isinstance(meta.get("riskscope"), dict) else {}
    if isinstance(ours.get("point"), str):
        try:
            return HookPoint.parse(ours["point"])
        except (ValueError, RiskscopeError):
            raise RiskscopeError(f"{where}: metadata.riskscope.point {ours['point']!r} is not a hook point") from None
    name = meta.get("hook_name", cfg.get("hook_name"))
    for hook, pattern in _TL_HOOKS.items():
        head, tail = pattern.split("{}")
        if isinstance(name, str) and name.startswith(head) and name.endswith(tail):
            mid = name[len(head):len(name) - len(tail)]
            if mid.isdigit():
                return HookPoint(hook, int(mid))
    raise RiskscopeError(f"{where}: hook_name {name!r} is not a hook point riskscope reads "
                         f"({', '.join(p.format('L') for p in _TL_HOOKS.values())})")


def read_density(path: str | Path) -> torch.Tensor | None:
    """Each latent's training firing rate from ``sparsity.safetensors`` (log10 density), or None without one."""
    f = Path(path) / SAELENS_SPARSITY
    if not f.is_file():
        return None
    t = _read_tensors(f)
    if "sparsity" not in t:
        raise RiskscopeError(f"{f}: no tensor 'sparsity'")
    return torch.pow(10.0, t["sparsity"].double()).clamp_max(1.0)


def check_sae_width(sae: SparseAutoencoder, width: int, where: str) -> None:
    """Refuse an SAE whose d_in differs from the activations it is meant to read."""
    if sae.d_in != width:
        raise RiskscopeError(f"the SAE reads {sae.d_in}-wide activations but {where} is {width} wide")


__all__ = ["CFG", "SAELENS_SPARSITY", "SAELENS_WEIGHTS", "SPARSIFY_WEIGHTS", "check_sae_width", "load_sae",
           "read_density", "sae_point", "save_saelens", "save_sparsify", "tl_hook_name"]
