"""The ``riskscope`` typer app: the root options, every command group registered, and :func:`main`."""

from __future__ import annotations

import sys

import typer

from . import _analysis, _common, _compare, _data, _evaluate, _melbo, _organism, _probe, _sae, _serve

app = typer.Typer(
    name="riskscope",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help text: rich's help panels cost a third of every --help's time
)


@app.callback()
def _root() -> None:
    """Look inside open-weight language models for tacit-risk signals.

    Give --debug before the command (riskscope --debug run ...) to see tracebacks instead of one-line errors.
    """


_data.register(app)      # models, datasets, cache, verify
_probe.register(app)     # probe, score, report, run
_evaluate.register(app)  # evaluate
_analysis.register(app)  # analyze, neurons, ask, steer, trace, vector ...
_melbo.register(app)     # melbo
_sae.register(app)       # sae train
_compare.register(app)   # compare layers
_serve.register(app)     # serve, perplexity
_organism.register(app)  # organism plant, show, test


def main(argv: list[str] | None = None) -> None:
    """Entry point (``riskscope``, ``python -m riskscope.cli``): exit 0 on success, 2 with one ``error:`` line
    for usage errors, bad input and file errors, 130 after Ctrl-C; ``--debug`` shows tracebacks."""
    sys.exit(_common.invoke(app, argv))


if __name__ == "__main__":
    main()
