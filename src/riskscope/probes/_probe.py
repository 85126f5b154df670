"""The probe: a fitted linear readout at one hook point, and its saved bundle.

A :class:`Probe` is what every part of riskscope reads a score with: the effects of
interventions, the neuron clamps, per-token traces, the caution demo, ``riskscope score``.
It holds the estimator (a :class:`~riskscope.probes.LogisticProbe`, a
:class:`~riskscope.probes.LinearReadout`, or anything with ``decision_function`` and
``coef_``), the hook point and token reduction its features come from and, for a saved
probe, the model and weights it was trained on.

``RUN/probe/`` holds ``bundle.json`` (format ``riskscope-probe/1``, model id + weight hash,
hook, layer, positions, threshold, meta) beside the estimator's own ``config.json`` +
``weights.safetensors`` (which include the standardisation). Never pickle.

A probe may carry a *recipe* (format ``riskscope-probe/2``): a token ``readout`` (``last``, ``mean``,
``max``, ``span``; see :mod:`riskscope.hooks`), further single-point ``parts`` (folders ``part-1/`` ...)
and a ``lexical`` TF-IDF model (folder ``lexical/``), whose logits are standardised with ``combine``'s
``mean``/``scale``, averaged, and mapped to a probability by ``combine``'s ``a``, ``b`` (``expit(a s +
b)``). A bundle without a ``readout`` field reads its ``positions`` (``last`` by default), as before.

>>> probe = Probe.load("runs/default/probe")          # doctest: +SKIP
>>> probe.score(["The fitness app requested access to contacts."])  # doctest: +SKIP
array([0.83])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.special import expit

from .._io import atomic_json, file_mode
from .._version import __version__
from ..errors import ModelError, RiskscopeError
from ..hooks import HOOKS, READOUTS, HookPoint, capture_texts, check_readouts
from ..models import LoadedModel, load_model
from ._logistic import LogisticProbe
from ._readout import LinearReadout

FORMAT = "riskscope-probe/1"
FORMAT_RECIPE = "riskscope-probe/2"
_OWN_FILES = frozenset({"bundle.json", "config.json", "weights.safetensors"})
_PART_DIR = re.compile(r"part-\d+|lexical")
_ESTIMATORS = {"LogisticProbe": LogisticProbe, "LinearReadout": LinearReadout}


@dataclass(frozen=True, eq=False, kw_only=True)
class Probe:
    """A fitted linear probe read at one hook point (optionally tied to the weights it was trained on)."""

    estimator: Any
    """Fitted estimator with ``decision_function`` and ``coef_`` (standardisation inside)."""
    hook: str
    """Hook of the activations the probe reads, e.g. ``resid_post``."""
    layer: int
    """Layer of those activations."""
    positions: str | tuple[int, ...] = "last"
    """Token reduction of the features: ``last``, ``mean``, or token indices (their rows concatenated)."""
    model_id: str | None = None
    """What ``load_model`` needs to rebuild the features (None for a probe fitted in memory)."""
    weight_hash: str | None = None
    """The weights the probe was trained on; other weights are refused (None: not checked)."""
    threshold: float = 0.5
    """Probability above which a text is called risky."""
    meta: dict = field(default_factory=dict)
    """Provenance: dataset, metrics of this layer, C, store."""
    readout: str | None = None
    """Token readout of the features (``last``, ``mean``, ``max``, ``span``); None: ``positions`` says."""
    parts: tuple["Probe", ...] = ()
    """Further single-point probes whose scores are averaged with this one's (a recipe)."""
    lexical: Any = None
    """A text model (``decision_function(texts)``, e.g. :class:`LexicalModel`) averaged in (a recipe)."""
    combine: dict | None = None
    """How a recipe's logits combine: ``mean``, ``scale`` (one per component: this probe, the parts, the
    lexical model) and ``a``, ``b`` of the probability ``expit(a * average + b)``."""

    def __post_init__(self) -> None:
        HookPoint(self.hook, int(self.layer))  # validates the hook name
        if self.readout is not None:
            check_readouts([self.readout], "probe readout")
        object.__setattr__(self, "parts", tuple(Probe.of(p) for p in self.parts))
        if any(p.parts or p.lexical is not None for p in self.parts):
            raise RiskscopeError("a recipe's parts must be single-point probes")
        n = 1 + len(self.parts) + (self.lexical is not None)
        if n > 1:
            c = self.combine or {}
            if not (len(c.get("mean", ())) == n and len(c.get("scale", ())) == n
                    and all(float(s) > 0 for s in c["scale"]) and "a" in c and "b" in c):
                raise RiskscopeError(f"a recipe of {n} components needs combine = {{mean, scale: {n} values each, "
                                     f"a, b}}; got {self.combine!r}")
        object.__setattr__(self, "layer", int(self.layer))
        if not callable(getattr(self.estimator, "decision_function", None)):
            raise RiskscopeError(f"a probe needs a fitted estimator with decision_function; "
                                 f"{type(self.estimator).__name__} has none")
        pos = self.positions
        if isinstance(pos, str):
            if pos not in ("last", "mean"):
                raise RiskscopeError(f"probe positions must be 'last', 'mean' or token indices, got {pos!r}")
        else:
            try:
                pos = tuple(int(i) for i in pos)
            except (TypeError, ValueError):
                raise RiskscopeError(f"probe positions must be 'last', 'mean' or token indices, got {pos!r}") from None
            if not pos:
                raise RiskscopeError("probe positions must not be empty")
            object.__setattr__(self, "positions", pos)

    @classmethod
    def of(cls, probe: Any) -> "Probe":
        """``probe`` itself when it is a :class:`Probe`, else a clear error."""
        if isinstance(probe, cls):
            return probe
        raise RiskscopeError(f"expected a riskscope Probe, got {type(probe).__name__}; make one with "
                             f"Probe(estimator=..., hook=..., layer=...) or Probe.load(path)")

    @property
    def point(self) -> HookPoint:
        return HookPoint(self.hook, self.layer)

    @property
    def name(self) -> str:
        """The hook point as text, e.g. ``resid_post.22``."""
        return str(self.point)

    @property
    def is_recipe(self) -> bool:
        """Whether scores combine several components (parts or a lexical model)."""
        return bool(self.parts) or self.lexical is not None

    @property
    def recipe(self) -> str:
        """What the probe reads, in words, e.g. ``mean resid_post.15`` or ``mean resid_post.{13,15} avg +
        lexical``."""
        head = f"{self.readout or (self.positions if isinstance(self.positions, str) else 'positions')} "
        if self.parts:
            pts = [self, *self.parts]
            head += f"{self.hook}.{{{','.join(str(p.layer) for p in pts)}}} avg"
        else:
            head += self.name
        return head + (" + lexical" if self.lexical is not None else "")

    @property
    def n_features(self) -> int:
        n = getattr(self.estimator, "n_features_in_", None)
        return int(n) if n else int(np.asarray(self.estimator.coef_).shape[-1])

    # --- reading activations -------------------------------------------------------------------------

    def logit(self, X) -> np.ndarray:
        """(N,) decision values (log-odds of risky) of activation rows ``X`` (N, W), or (N, k, W) for
        explicit token positions."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 3:
            X = X.reshape(len(X), -1)
        z = np.asarray(self.estimator.decision_function(X), dtype=np.float64)
        if z.size != len(X):
            raise RiskscopeError(f"probe {self.name} is not a binary probe: it gives {z.shape} scores for "
                                 f"{len(X)} rows")
        return z.reshape(len(X))

    def predict_proba(self, X) -> np.ndarray:
        """(N,) probability that each activation row is risky."""
        proba = getattr(self.estimator, "predict_proba", None)
        if proba is None:
            return expit(self.logit(X))
        X = np.asarray(X, dtype=np.float64)
        return np.asarray(proba(X.reshape(len(X), -1) if X.ndim == 3 else X), dtype=np.float64)[:, 1]

    def direction(self) -> np.ndarray:
        """(W,) the probe's weight vector in raw activation units (``coef_ / scale_``)."""
        coef = np.asarray(self.estimator.coef_, dtype=np.float64).reshape(-1)
        scale = np.asarray(getattr(self.estimator, "scale_", np.ones_like(coef)), dtype=np.float64).reshape(-1)
        return coef / scale

    # --- the model ---------------------------------------------------------------------------------

    def check(self, lm: LoadedModel) -> None:
        """Raise a clear error when the probe does not fit ``lm``: other weights, no such layer, other width."""
        if self.weight_hash and lm.weight_hash != self.weight_hash:
            raise ModelError(f"the probe was trained on weights {self.weight_hash[:12]}... but model "
                             f"{lm.model_id!r} has weights {lm.weight_hash[:12]}...; use the model it was trained on")
        lm.layout.layer_index(self.layer)
        for part in self.parts:
            part.check(lm)
        w = self.point.width(lm)
        k = 1 if self.readout is not None or isinstance(self.positions, str) else len(self.positions)
        if self.n_features != w * k:
            what = f"width is {w}" if k == 1 else f"width {w} at {k} positions gives {w * k}"
            raise RiskscopeError(f"probe {self.name} expects {self.n_features} features but the model's "
                                 f"{self.hook} {what}")

    def load_model(self, **kwargs) -> LoadedModel:
        """Load the probe's model and check it is the one the probe was trained on."""
        if not self.model_id:
            raise RiskscopeError(f"probe {self.name} names no model; pass the model to use")
        lm = load_model(self.model_id, **kwargs)
        self.check(lm)
        return lm

    def features(self, lm: LoadedModel, texts: Sequence[str], batch_size: int = 32,
                 truncate: bool = False) -> np.ndarray:
        """The probe's feature rows of ``texts`` in ``lm``: (N, W), or (N, k, W) for token indices. Texts
        longer than the model's context are refused, or cut to it with ``truncate``."""
        reduce = self.positions if isinstance(self.positions, str) else tuple(self.positions)
        got = capture_texts(lm, texts, [self.point], reduce, batch_size, truncate=truncate, readout=self.readout)
        return got[self.point.normalised(lm)]

    def _recipe_features(self, lm: LoadedModel, texts: Sequence[str], batch_size: int,
                         truncate: bool) -> list[np.ndarray]:
        """The feature rows of this probe and of each recipe part, in that order, from one forward per
        distinct (positions, readout) (one in all when the parts differ only in hook and layer)."""
        probes = (self, *self.parts)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(probes):
            reduce = "last" if p.readout is not None else (  # a readout replaces the positions
                p.positions if isinstance(p.positions, str) else tuple(p.positions))
            groups.setdefault((reduce, p.readout), []).append(i)
        out: list[np.ndarray] = [np.empty(0)] * len(probes)
        for (reduce, readout), idx in groups.items():
            points: list = []
            for i in idx:
                if probes[i].point not in points:
                    points.append(probes[i].point)
            got = capture_texts(lm, texts, points, reduce, batch_size, truncate=truncate, readout=readout)
            for i in idx:
                out[i] = got[probes[i].point.normalised(lm)]
        return out

    def score(self, texts: Sequence[str], lm: LoadedModel | None = None, batch_size: int = 32,
              truncate: bool = False) -> np.ndarray:
        """Probability that each text is risky, (N,) (the probe's model is loaded when ``lm`` is None)."""
        if isinstance(texts, str):
            texts = [texts]
        if lm is None:
            lm = self.load_model()
        else:
            self.check(lm)
        if not texts:
            return np.zeros(0)
        if not self.is_recipe:
            return self.predict_proba(self.features(lm, texts, batch_size, truncate))
        z = [p.logit(x) for p, x in zip((self, *self.parts), self._recipe_features(lm, texts, batch_size, truncate))]
        if self.lexical is not None:
            z.append(np.asarray(self.lexical.decision_function(list(texts)), dtype=np.float64))
        c = self.combine or {}
        s = np.mean([(zi - float(m)) / float(sd) for zi, m, sd in zip(z, c["mean"], c["scale"])], axis=0)
        return expit(float(c["a"]) * s + float(c["b"]))

    # --- the bundle --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the bundle folder ``path`` atomically (a temporary folder renamed into place).

        An existing ``path`` is replaced only when it is empty or a riskscope probe bundle holding
        nothing but its own files; otherwise :class:`~riskscope.errors.RiskscopeError`, before any work.
        """
        path = Path(path)
        replace = _replaceable(path)
        if not callable(getattr(self.estimator, "save", None)):
            raise RiskscopeError(f"{type(self.estimator).__name__} has no save(); a probe bundle needs an estimator "
                                 f"that writes config.json + weights.safetensors")
        for p in self.parts:
            if not callable(getattr(p.estimator, "save", None)):
                raise RiskscopeError(f"{type(p.estimator).__name__} has no save(); a recipe part must be saveable")
        if self.lexical is not None and not callable(getattr(self.lexical, "save", None)):
            raise RiskscopeError(f"{type(self.lexical).__name__} has no save(); the lexical model must be saveable")
        new = self.is_recipe or self.readout not in (None, "last")
        info = {"format": FORMAT_RECIPE if new else FORMAT, "riskscope_version": __version__, "model": self.model_id,
                "weight_hash": self.weight_hash, "hook": self.hook, "layer": self.layer,
                "positions": self.positions if isinstance(self.positions, str) else list(self.positions),
                "threshold": self.threshold, "meta": self.meta}
        if self.readout is not None:
            info["readout"] = self.readout
        if self.is_recipe:
            info["parts"] = [{"hook": p.hook, "layer": p.layer, "readout": p.readout or "last",
                              "folder": f"part-{i + 1}"} for i, p in enumerate(self.parts)]
            info["lexical"] = "lexical" if self.lexical is not None else None
            info["combine"] = {k: (list(map(float, v)) if isinstance(v, (list, tuple)) else float(v))
                               for k, v in (self.combine or {}).items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        _recover(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            mode = file_mode()
            os.chmod(tmp, mode | ((mode & 0o444) >> 2))  # a folder as the umask makes them, not mkdtemp's 0700
            self.estimator.save(tmp)
            for i, p in enumerate(self.parts):
                p.estimator.save(tmp / f"part-{i + 1}")
            if self.lexical is not None:
                self.lexical.save(tmp / "lexical")
            atomic_json(tmp / "bundle.json", info)
            if replace:
                aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
                os.rename(path, aside / "bundle")
                try:
                    os.rename(tmp, path)
                except BaseException:
                    os.rename(aside / "bundle", path)
                    raise
                shutil.rmtree(aside, ignore_errors=True)  # the old bundle, checked to be ours
            else:
                os.rename(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Probe":
        """Read a bundle written by :meth:`save` (``path`` may be its run folder); unknown keys are ignored."""
        path = Path(path)
        if (path / "probe" / "bundle.json").is_file():  # a run folder
            path = path / "probe"
        info_path = path / "bundle.json"
        if not info_path.is_file():
            raise RiskscopeError(f"{path} is not a probe bundle (no bundle.json); create one with `riskscope probe` "
                                 f"or `riskscope run`")
        info = _read_info(info_path)
        if info.get("format") not in (FORMAT, FORMAT_RECIPE):
            raise RiskscopeError(f"{info_path}: unknown probe format {info.get('format')!r} (this riskscope reads "
                                 f"{FORMAT!r} and {FORMAT_RECIPE!r})")
        for key in ("hook", "layer"):
            if key not in info:
                raise RiskscopeError(f"{info_path}: field {key!r} is missing")
        layer = info["layer"]
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise RiskscopeError(f"{info_path}: field 'layer' must be an integer, got {layer!r}")
        if not isinstance(info["hook"], str) or info["hook"] not in HOOKS:
            raise RiskscopeError(f"{info_path}: field 'hook' is {info['hook']!r}; riskscope's hooks are "
                                 f"{', '.join(HOOKS)}")
        for key in ("model", "weight_hash"):
            if info.get(key) is not None and not isinstance(info[key], str):
                raise RiskscopeError(f"{info_path}: field {key!r} must be a string, got {info[key]!r}")
        threshold = info.get("threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise RiskscopeError(f"{info_path}: field 'threshold' must be a probability in [0, 1], got {threshold!r}")
        est_name = "LogisticProbe"
        config = path / "config.json"
        if config.is_file():
            est_name = _read_info(config).get("estimator", est_name)
        if not isinstance(est_name, str) or est_name not in _ESTIMATORS:
            raise RiskscopeError(f"{config}: field 'estimator' is {est_name!r}; riskscope reads "
                                 f"{', '.join(sorted(_ESTIMATORS))}")
        pos = info.get("positions", "last")
        if not (pos in ("last", "mean") or (isinstance(pos, list) and pos
                                            and all(isinstance(i, int) and not isinstance(i, bool) for i in pos))):
            raise RiskscopeError(f"{info_path}: field 'positions' must be last, mean or a list of token indices, "
                                 f"got {pos!r}")
        readout = info.get("readout")
        if readout is not None and readout not in READOUTS:
            raise RiskscopeError(f"{info_path}: field 'readout' is {readout!r}; riskscope reads {', '.join(READOUTS)}")
        parts, lexical = _read_parts(path, info_path, info)
        try:
            return cls(estimator=_ESTIMATORS[est_name].load(path), hook=info["hook"], layer=int(info["layer"]),
                       positions=pos if isinstance(pos, str) else tuple(pos), model_id=info.get("model"),
                       weight_hash=info.get("weight_hash"), threshold=float(info.get("threshold", 0.5)),
                       meta=info.get("meta") or {}, readout=readout, parts=parts, lexical=lexical,
                       combine=info.get("combine"))
        except RiskscopeError as e:
            raise RiskscopeError(f"{info_path}: {e}") from None


def _read_parts(path: Path, info_path: Path, info: dict) -> tuple[tuple[Probe, ...], Any]:
    """The recipe parts and lexical model named in ``bundle.json`` (empty for a single probe)."""
    from ._lexical_model import LexicalModel

    parts = []
    raw = info.get("parts") or []
    if not isinstance(raw, list):
        raise RiskscopeError(f"{info_path}: field 'parts' must be a list")
    for i, p in enumerate(raw):
        ok = isinstance(p, dict) and isinstance(p.get("hook"), str) and p["hook"] in HOOKS \
            and isinstance(p.get("layer"), int) and not isinstance(p.get("layer"), bool) \
            and p.get("readout") in READOUTS and isinstance(p.get("folder"), str) and _PART_DIR.fullmatch(p["folder"])
        if not ok:
            raise RiskscopeError(f"{info_path}: field 'parts' item {i + 1} must be {{hook, layer, readout, folder}}")
        est = LinearReadout if _read_info(path / p["folder"] / "config.json").get("estimator") == "LinearReadout" \
            else LogisticProbe
        parts.append(Probe(estimator=est.load(path / p["folder"]), hook=p["hook"], layer=p["layer"],
                           readout=p["readout"]))
    lexical = None
    if info.get("lexical") is not None:
        if info["lexical"] != "lexical":
            raise RiskscopeError(f"{info_path}: field 'lexical' must be \"lexical\" or null")
        lexical = LexicalModel.load(path / "lexical")
    return tuple(parts), lexical


_BUNDLE_FILES = {"bundle.json", "config.json", "weights.safetensors"}


def _ours(folder: Path, depth: int = 0) -> bool:
    """A folder that holds nothing but a bundle's files (or their atomic writers' temporary files), and
    its recipe's part folders holding the same."""
    return all((f.is_file() and (f.name in _BUNDLE_FILES or re.fullmatch(r"\..+\.\d+\.tmp", f.name)))
               or (depth == 0 and f.is_dir() and not f.is_symlink() and _PART_DIR.fullmatch(f.name)
                   and _ours(f, 1))
               for f in folder.iterdir())


def _recover(path: Path) -> None:
    """Tidy what a killed :meth:`Probe.save` of ``path`` can leave: a half-written ``.NAME.XXXXXXXX.tmp``
    folder (removed), and the previous bundle moved aside to ``.NAME.XXXXXXXX.old/bundle`` (put back when
    ``path`` is missing, else removed). Folders holding anything but a bundle's files are left alone."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(tmp|old)")
    for entry in sorted(path.parent.iterdir()):
        m = pattern.fullmatch(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        if m.group(1) == "tmp" and _ours(entry):
            shutil.rmtree(entry)
        elif m.group(1) == "old" and [x.name for x in entry.iterdir()] == ["bundle"] and _ours(entry / "bundle"):
            if not path.exists():
                os.rename(entry / "bundle", path)
            shutil.rmtree(entry)


def _read_info(info_path: Path) -> dict:
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RiskscopeError(f"{info_path}:{e.lineno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise RiskscopeError(f"{info_path}: not UTF-8 text (byte {e.start}); the bundle is damaged") from None
    except RecursionError:
        raise RiskscopeError(f"{info_path}: JSON nested too deeply; the bundle is damaged") from None
    if not isinstance(info, dict):
        raise RiskscopeError(f"{info_path}: expected a JSON object")
    return info


def _replaceable(path: Path) -> bool:
    """Whether ``path`` exists and may be replaced: an empty folder or one of our bundles with only our files."""
    if not path.exists() and not path.is_symlink():
        return False
    if path.is_symlink() or not path.is_dir():
        raise RiskscopeError(f"{path} exists and is not a probe bundle folder; choose another path")
    entries = list(path.iterdir())
    if not entries:
        return True
    ours = all((e.name in _OWN_FILES and e.is_file() and not e.is_symlink())
               or (_PART_DIR.fullmatch(e.name) and e.is_dir() and not e.is_symlink()
                   and all(f.name in _OWN_FILES and f.is_file() and not f.is_symlink() for f in e.iterdir()))
               for e in entries)
    if ours and (path / "bundle.json").is_file():
        try:
            ours = json.loads((path / "bundle.json").read_text()).get("format") in (FORMAT, FORMAT_RECIPE)
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            ours = False
    else:
        ours = False
    if not ours:
        raise RiskscopeError(f"{path} holds files that are not a riskscope probe bundle; riskscope replaces only "
                             f"its own bundles: choose another folder or move those files")
    return True


__all__ = ["FORMAT", "FORMAT_RECIPE", "Probe"]
