"""The ``riskscope`` typer app: the root options, every command group registered, and :func:`main`."""

from __future__ import annotations

import sys

import typer

from . import _analysis, _common, _data, _melbo, _probe

app = typer.Typer(
    name="riskscope",
    help="Look inside open-weight language models for tacit-risk signals.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks on errors (give it before the "
                                     "command)")) -> None:
    _common.STATE["debug"] = debug


_data.register(app)      # models, datasets, cache, verify
_probe.register(app)     # probe, score, report, run
_analysis.register(app)  # analyze, neurons, ask, steer, trace, vector ...
_melbo.register(app)     # melbo


def main(argv: list[str] | None = None) -> None:
    """Entry point (``riskscope``, ``python -m riskscope.cli``): exit 0 on success, 2 with one ``error:`` line
    for usage errors, bad input and file errors, 130 after Ctrl-C; ``--debug`` shows tracebacks."""
    sys.exit(_common.invoke(app, argv))


if __name__ == "__main__":
    main()
