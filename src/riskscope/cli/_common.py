"""What every command shares: the consoles, the shared options (one help text each), model loading with
progress, progress bars, the option parsers and the error handler.

Importing this module (and so ``riskscope --help``) imports neither torch nor numpy: commands import the heavy
packages inside their bodies.
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from ..errors import RiskscopeError
from ..pipeline import ProbeRunConfig, RunConfig, parse_hooks, parse_layers, parse_module_paths, parse_positions

err = Console(stderr=True)
"""Progress, status lines and errors."""
out = Console()
"""Results (tables, JSON)."""
STATE = {"debug": False}
"""``--debug`` before the command (read by :func:`invoke`): show tracebacks instead of one-line errors."""


def default(cls: type, name: str) -> Any:
    """The default of a config field, so CLI defaults and the Python API cannot drift."""
    f = cls.__dataclass_fields__[name]
    value = f.default if f.default is not MISSING else f.default_factory()
    return ",".join(value) if isinstance(value, tuple) else value


# --- shared options (one help text each) ----------------------------------------------------------------

MODEL_HELP = ("default | a named model (riskscope models) | path/to/file.gguf | local HF dir | hub id in the local "
              "HF cache")
_RECORDED = " (default: as recorded in the run's manifest)"
TRUST_HELP = "allow the model repo's own Python code to run"
PATHS_HELP = ("override adapter module paths, e.g. blocks=model.layers,mlp_down=mlp.down_proj "
              "(for unknown architectures)")

ModelOpt = typer.Option(default(RunConfig, "model"), "--model", "-m", help=MODEL_HELP)
RunModelOpt = typer.Option(None, "--model", "-m", help=MODEL_HELP + " (default: the run's model)")
DTypeOpt = typer.Option(default(RunConfig, "dtype"), help="model dtype: float32 (CPU default), bfloat16, float16, "
                        "auto")
DeviceOpt = typer.Option(default(RunConfig, "device"), help="cpu, cuda, cuda:N, or auto (device_map=auto across "
                         "GPUs)")
TrustOpt = typer.Option(False, "--trust-remote-code", help=TRUST_HELP)
RunTrustOpt = typer.Option(None, "--trust-remote-code/--no-trust-remote-code", help=TRUST_HELP + _RECORDED,
                           show_default=False)
PathsOpt = typer.Option(None, "--module-paths", help=PATHS_HELP)
RunPathsOpt = typer.Option(None, "--module-paths", help=PATHS_HELP + _RECORDED)
DatasetOpt = typer.Option(default(RunConfig, "dataset"), "--dataset", "-d",
                          help="built-in name (riskscope datasets) or a .jsonl/.csv file")
LimitOpt = typer.Option(None, "--limit", help="use only the first N pairs (quick tries)")
JsonOpt = typer.Option(False, "--json", help="print a JSON summary instead of tables")
SaveOpt = typer.Option(None, "--out", "-o", help="also write the full result as JSON here")
LayersOpt = typer.Option(default(RunConfig, "layers"), help="all | 0,5,-1 | 10-20 (negative count from the end)")
HooksOpt = typer.Option(default(RunConfig, "hooks"),
                        help="comma list of resid_pre, resid_post, attn_out, mlp_neurons, mlp_out")
StoreDTypeOpt = typer.Option(default(RunConfig, "store_dtype"), "--store-dtype", help="float32, float16 or bfloat16")
BatchOpt = typer.Option(default(RunConfig, "batch_size"), help="texts per forward pass")
ChunkRowsOpt = typer.Option(default(RunConfig, "chunk_rows"), help="texts per chunk file (the unit of resumption)")
TruncateOpt = typer.Option(default(RunConfig, "truncate"), "--truncate/--no-truncate",
                           help="cut texts longer than the model context instead of failing")
FoldsOpt = typer.Option(default(ProbeRunConfig, "folds"), help="outer CV folds, grouped by pair")
PenaltyOpt = typer.Option(default(ProbeRunConfig, "penalty"), help="probe penalty: l2, l1 or elasticnet")
TargetOpt = typer.Option(default(ProbeRunConfig, "target"),
                         help="binary (risky/benign), category (multinomial) or severity (ridge on risky texts)")
BootstrapOpt = typer.Option(default(ProbeRunConfig, "n_bootstrap"), help="bootstrap resamples of pairs for CIs")
SeedOpt = typer.Option(default(ProbeRunConfig, "seed"), help="seed for folds, shuffled control and bootstrap")
SKIP_HELP = "analyses not to run, comma-separated: neurons, effects, ask, traces, vectors, caution"


# --- parsers (parse_layers, parse_positions, parse_hooks, parse_module_paths: one rule each, from pipeline) -----


def layers_or_none(text: Optional[str], n_layers: int | None = None) -> list[int] | None:
    """``--layers`` of commands where it is optional: None when not given."""
    if not text:
        return None
    return parse_layers(text, n_layers if n_layers is not None else 10**6)


# --- models and progress ---------------------------------------------------------------------------------


def load_lm(model: str, dtype: str, device: str, trust: bool = False, paths: str | dict | None = None):
    """Load a model with a status line on stderr (tests replace this function to use a tiny model)."""
    from ..models import load_model

    with err.status(f"loading model {model} ..."):
        return load_model(model, dtype=dtype, device=device, trust_remote_code=bool(trust),
                          module_paths=parse_module_paths(paths), progress=lambda m: err.print(f"[dim]{m}[/dim]"))


def load_run_lm(run: Path, model: Optional[str], dtype: str, device: str, trust: Optional[bool],
                paths: Optional[str]):
    """The model of a run folder or store: ``--model``, ``--trust-remote-code`` and ``--module-paths`` default to
    what the run's manifest (or the store's) recorded."""
    from ..pipeline import run_model_settings

    recorded = run_model_settings(run)
    return load_lm(model or recorded.get("model") or "default", dtype, device,
                   recorded.get("trust_remote_code", False) if trust is None else trust,
                   paths if paths is not None else recorded.get("module_paths"))


def progress():
    """A progress bar on stderr (description, bar, done/total, elapsed, remaining)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=err, transient=False)


class Steps:
    """One live display for a multi-step job: a spinner line per step, and a bar while caching."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self._progress = Progress(SpinnerColumn(finished_text="-"), TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=False)
        self._task = None
        self._bar = None

    def __enter__(self) -> "Steps":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._finish()
        self._progress.stop()

    def _finish(self) -> None:
        if self._task is not None:
            total = self._progress.tasks[self._task].total
            self._progress.update(self._task, total=total or 1, completed=total or 1)
            self._task = None

    def status(self, message: str) -> None:
        """A new step (or a new line of the current one)."""
        self._finish()
        self._task = self._progress.add_task(message, total=None)

    def advance(self, n: int, total: int) -> None:
        """``n`` more items of ``total`` done in the current step."""
        if self._task is None:
            self.status("working")
        self._progress.update(self._task, total=total, advance=n)


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout (non-JSON values as strings)."""
    out.print_json(json.dumps(data, default=str))


def save_json(path: Optional[Path], data: Any) -> None:
    """Write ``data`` to ``path`` (atomically) when a path is given."""
    if path is not None:
        from .._io import atomic_json

        atomic_json(path, data)


# --- the error contract ----------------------------------------------------------------------------------


def _usage_errors() -> tuple[type, ...]:
    """Usage-error classes of typer's vendored click and, when loaded, of click itself."""
    from typer._click.exceptions import ClickException

    kinds: list[type] = [ClickException]
    click = sys.modules.get("click")
    if click is not None:
        kinds.append(click.exceptions.ClickException)
    return tuple(kinds)


def _aborts() -> tuple[type, ...]:
    kinds: list[type] = [typer.Abort]
    click = sys.modules.get("click")
    if click is not None:
        kinds.append(click.exceptions.Abort)
    return tuple(kinds)


def _one_line(message: str) -> None:
    from rich.markup import escape  # messages hold [brackets]: riskscope[melbo], lists

    text = escape(" ".join(str(message).split()))
    err.print(f"[bold red]error:[/bold red] {text}", highlight=False, soft_wrap=True, markup=True)


def _usage_line(e: Exception) -> str:
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    ctx = getattr(e, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and getattr(e, "exit_code", 2) == 2 else ""
    return message + hint


INTERRUPTED = "interrupted; re-run to resume"


def invoke(app: Callable[..., Any], args: list[str] | None = None) -> int:
    """Run the typer ``app`` under riskscope's error contract and return the exit status.

    0 success; 2 usage errors (unknown option or command, missing or unreadable value), RiskscopeError and file
    errors, each as one ``error:`` line on stderr; 130 after Ctrl-C. ``--debug`` re-raises instead.
    """
    args = list(sys.argv[1:] if args is None else args)
    # --debug before the command is read here rather than declared as a typer option: typer coerces its options
    # through pydantic, and importing that for one root flag would double the time of every --help.
    STATE["debug"] = False
    while args and args[0] == "--debug":
        STATE["debug"] = True
        args.pop(0)
    try:
        rc = app(args=args, prog_name="riskscope", standalone_mode=False)
    except RiskscopeError as e:
        if STATE["debug"]:
            raise
        _one_line(str(e))
        return 2
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        return 130
    except OSError as e:  # a file that cannot be read or written
        if STATE["debug"]:
            raise
        _one_line(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        return 2
    except Exception as e:
        if isinstance(e, _aborts()):
            err.print(INTERRUPTED)
            return 130
        if not isinstance(e, _usage_errors()):
            raise
        if getattr(e, "exit_code", 2) == 2 and type(e).__name__ == "NoArgsIsHelpError":
            text = e.format_message().rstrip()  # typer's rich help has been printed already
            if text:
                out.print(text, highlight=False, markup=False)
            return 2
        _one_line(_usage_line(e))
        return 2 if getattr(e, "exit_code", 2) in (2, None) else int(e.exit_code)
    if rc == 130:  # typer turns Ctrl-C into Exit(130)
        err.print(INTERRUPTED)
        return 130
    return rc if isinstance(rc, int) else 0


__all__ = [
    "BatchOpt", "BootstrapOpt", "ChunkRowsOpt", "DTypeOpt", "DatasetOpt", "DeviceOpt", "FoldsOpt", "HooksOpt",
    "INTERRUPTED", "JsonOpt", "LayersOpt", "LimitOpt", "MODEL_HELP", "ModelOpt", "PathsOpt", "PenaltyOpt",
    "RunModelOpt", "RunPathsOpt", "RunTrustOpt", "SKIP_HELP", "SaveOpt", "SeedOpt", "Steps", "StoreDTypeOpt",
    "TargetOpt", "TruncateOpt", "TrustOpt", "default", "err", "invoke", "layers_or_none", "load_lm", "load_run_lm",
    "out", "parse_hooks", "parse_layers", "parse_module_paths", "parse_positions", "print_json", "progress",
    "save_json",
]
