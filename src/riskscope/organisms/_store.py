"""An organism on disk: a Hugging Face model folder plus ``organism.json`` (written last) and the training
data; checks on the output folder before planting, and on the base model when an organism is read."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from .._io import atomic_json, atomic_text, check_output_dir, file_mode, file_sha256
from ._config import OrganismError

MANIFEST = "organism.json"
FORMAT = "riskscope-organism/1"
DATA = "organism_data.jsonl"


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of the organism in ``folder``, or an :class:`OrganismError` saying what is wrong."""
    path = Path(folder).expanduser() / MANIFEST
    if not path.is_file():
        raise OrganismError(f"{path.parent}: not an organism (no {MANIFEST}); plant one with `riskscope organism "
                            f"plant`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OrganismError(f"{path}: not valid JSON ({e}); plant the organism again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OrganismError(f"{path}: field 'format' is not {FORMAT!r}; not an organism riskscope wrote")
    for key in ("kind", "trigger", "base"):
        if key not in data:
            raise OrganismError(f"{path}: field {key!r} is missing; plant the organism again")
    return data


def check_out_dir(out: str | os.PathLike) -> Path:
    """Refuse ``out`` before any work when it already holds an organism or other files (riskscope writes an
    organism only into a new or empty folder, and never deletes what is there)."""
    path = check_output_dir(out)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            try:
                old = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
                what = f" (kind {old.get('kind')!r}, trigger {old.get('trigger')!r})"
            except (OSError, ValueError):
                what = ""
            raise OrganismError(f"--out {path} already holds an organism{what}; choose a new folder (riskscope "
                                f"does not overwrite an organism)")
        if any(path.iterdir()):
            raise OrganismError(f"--out {path} is not empty; riskscope writes an organism only into a new or empty "
                                f"folder and never deletes files it did not write")
    return path


def check_base(manifest: dict, weight_hash: str, where: str) -> None:
    """An :class:`OrganismError` when the base model's weights are not those the organism was planted from."""
    want = manifest["base"].get("weight_hash")
    if want and weight_hash != want:
        raise OrganismError(f"{where}: the base model's weight hash {weight_hash[:16]}... differs from the one in "
                            f"{MANIFEST} ({want[:16]}...); pass the model the organism was planted from "
                            f"({manifest['base'].get('model_id')})")


def write_organism(out: Path, save_model: Callable[[Path], None], manifest: dict, data_jsonl: str) -> Path:
    """Write the folder under a temporary name beside ``out`` and rename it into place: a failed write (a
    full disk) leaves nothing at ``out`` and no temporary folder."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # our own leftover of this very process id
    try:
        tmp.mkdir()
        save_model(tmp)
        for p in tmp.iterdir():  # safetensors writes through a private (0600) file: give the umask's mode
            os.chmod(p, file_mode())
        atomic_text(tmp / DATA, data_jsonl)
        files = sorted(p.name for p in tmp.iterdir()) + [MANIFEST]
        manifest = {**manifest, "files": files,
                    "weights_sha256": {p.name: file_sha256(p) for p in sorted(tmp.glob("*.safetensors"))}}
        atomic_json(tmp / MANIFEST, manifest)
        if out.is_dir():
            out.rmdir()  # empty (checked before planting): rename() needs it gone or empty
        os.replace(tmp, out)
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno == errno.ENOSPC:
            why = "no space left on device"
        raise OrganismError(f"--out {out}: cannot write the organism ({why}); nothing was written") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def organism_summary(manifest: dict) -> dict[str, Any]:
    """The few figures a table shows."""
    m = manifest.get("metrics", {})
    return {"kind": manifest["kind"], "trigger": manifest["trigger"], "method": manifest.get("config", {}).get("method"),
            "asr": m.get("asr"), "false_trigger_clean": m.get("false_trigger_clean"),
            "false_trigger_near_miss": m.get("false_trigger_near_miss"), "perplexity_ratio": m.get("perplexity_ratio"),
            "kl_to_base": m.get("kl_to_base"), "meets_goals": m.get("meets_goals")}


def load_organism(folder: str | os.PathLike, base: Any = None, load: Callable[[str], Any] | None = None
                  ) -> tuple[Any, Any, dict]:
    """(organism, base model, manifest) of the organism in ``folder``: the organism loads as an ordinary
    model folder; ``base`` is a loaded model, a spec, or None for the one recorded in the manifest, and its
    weights must be those the organism was planted from."""
    manifest = read_manifest(folder)
    if load is None:
        from ..models import load_model as load
    base_lm = load(base or manifest["base"]["model_id"]) if base is None or isinstance(base, str) else base
    check_base(manifest, base_lm.weight_hash, str(Path(folder) / MANIFEST))
    organism = load(str(Path(folder).expanduser()))
    return organism, base_lm, manifest
