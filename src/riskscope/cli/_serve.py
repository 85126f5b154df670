"""``riskscope serve`` (the HTTP service) and ``riskscope perplexity`` (score / calibrate), wired in by
:func:`register`. No logic here: the options build a :class:`~riskscope.service.ServeConfig` or a
:class:`~riskscope.scorers.PerplexityConfig` and call the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .._io import iter_jsonl
from ..errors import RiskscopeError
from . import _common

_err = Console(stderr=True)
_out = Console()


def _service():
    try:
        from .. import service
    except ImportError as e:
        raise RiskscopeError(f"`riskscope serve` needs the serve extra ({e.name} is missing): "
                             f"pip install 'riskscope[serve]'") from None
    return service


def read_texts(texts: Optional[List[str]], input_file: Optional[Path]) -> list[str]:
    """Texts from arguments, or a file: ``.jsonl`` (a string or an object with ``text`` per line) or lines."""
    if input_file is None:
        if not texts:
            raise RiskscopeError("give texts as arguments or --input FILE (.jsonl with 'text', or .txt lines)")
        return list(texts)
    try:
        raw = input_file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise RiskscopeError(f"{input_file}: no such file") from None
    except UnicodeDecodeError as e:
        raise RiskscopeError(f"{input_file}: not UTF-8 (byte {e.start})") from None
    if input_file.suffix == ".jsonl":
        out = []
        for n, rec in iter_jsonl(raw, str(input_file), objects=False):
            text = rec.get("text") if isinstance(rec, dict) else rec
            if not isinstance(text, str) or not text.strip():
                raise RiskscopeError(f"{input_file}:{n}: field 'text' is missing, empty or not a string")
            out.append(text)
    else:
        out = [line for line in raw.splitlines() if line.strip()]
    if not out:
        raise RiskscopeError(f"{input_file}: no texts in the file")
    return out


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``perplexity`` group to ``app``."""

    @app.command()
    def serve(
        probe: Path = typer.Option(..., "--probe", "-p", help="run folder or probe bundle folder"),
        perplexity: bool = typer.Option(False, "--perplexity", help="also run the windowed-perplexity filter"),
        perplexity_calibration: Optional[Path] = typer.Option(
            None, "--perplexity-calibration", help="calibration JSON (default RUN/perplexity.json when present, "
            "else calibrated on the built-in texts at load)"),
        host: str = typer.Option("127.0.0.1", help="interface to listen on (loopback by default)"),
        port: int = typer.Option(8000, help="TCP port (0: any free port)"),
        api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="API keys, one per line "
                                                    "(KEY or KEY RATE BURST); clients send Authorization: Bearer KEY"),
        max_batch: int = typer.Option(64, "--max-batch", help="most texts in one micro-batch"),
        forward_batch: int = typer.Option(16, "--forward-batch", help="most texts per padded forward inside a "
                                          "micro-batch (length-sorted)"),
        max_wait_ms: float = typer.Option(2.0, "--max-wait-ms", help="how long a batch waits for more requests"),
        batching: bool = typer.Option(True, "--batching/--no-batching", help="micro-batch concurrent requests"),
        max_texts: int = typer.Option(64, "--max-texts", help="most texts per request"),
        max_tokens: int = typer.Option(512, "--max-tokens", help="most tokens per text"),
        max_body_bytes: int = typer.Option(1 << 20, "--max-body-bytes", help="largest request body"),
        truncate: bool = typer.Option(False, "--truncate", help="cut over-long texts to --max-tokens (and say so) "
                                      "instead of answering 413"),
        rate_limit: float = typer.Option(20.0, "--rate-limit", help="requests/s per API key (per client without "
                                         "keys); 0: no limit"),
        rate_burst: int = typer.Option(40, "--rate-burst", help="requests a key may send at once"),
        timeout: float = typer.Option(30.0, "--timeout", help="seconds from request to answer (504 beyond)"),
        body_timeout: float = typer.Option(10.0, "--body-timeout", help="seconds a client has to send its body "
                                           "(408 beyond: a slow client)"),
        device: str = _common.DeviceOpt,
        dtype: str = _common.DTypeOpt,
        threads: Optional[int] = typer.Option(None, "--threads", help="torch threads for the forward worker"),
        allow_remote_without_key: bool = typer.Option(False, "--allow-remote-without-key",
                                                      help="listen off loopback without API keys (not advised)"),
        log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
        access_log: bool = typer.Option(False, "--access-log", help="log every request"),
    ) -> None:
        """Serve risk scores over HTTP: POST /v1/score, GET /healthz, /readyz, /metrics, /openapi.json."""
        svc = _service()
        if not svc.is_loopback(host) and api_key_file is None and not allow_remote_without_key:
            raise RiskscopeError(f"--host {host} is reachable from other machines; give --api-key-file (or "
                                 f"--allow-remote-without-key if another layer authenticates)")
        config = svc.ServeConfig(
            probe=str(probe), host=host, port=port, device=device, dtype=dtype, perplexity=perplexity,
            perplexity_calibration=str(perplexity_calibration) if perplexity_calibration else None,
            api_key_file=str(api_key_file) if api_key_file else None, batching=batching, max_batch=max_batch,
            forward_batch=forward_batch,
            max_wait_ms=max_wait_ms, max_body_bytes=max_body_bytes, max_texts=max_texts, max_tokens=max_tokens,
            truncate=truncate, rate_limit=rate_limit, rate_burst=rate_burst, request_timeout_s=timeout,
            body_timeout_s=body_timeout, threads=threads)
        svc.run_server(config, log_level=log_level, access_log=access_log,
                       announce=lambda m: print(f"riskscope serve: {m}", flush=True))

    ppl = typer.Typer(help="The windowed-perplexity filter: calibrate thresholds, score texts.",
                      no_args_is_help=True)
    app.add_typer(ppl, name="perplexity")

    @ppl.command("calibrate")
    def calibrate(
        probe: Optional[Path] = typer.Option(None, "--probe", "-p", help="run folder: use its model, write "
                                             "RUN/perplexity.json"),
        model: Optional[str] = _common.RunModelOpt,
        input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="benign texts (.jsonl 'text' or .txt "
                                                  "lines); default: the built-in dataset's texts"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="calibration JSON (default RUN/perplexity.json)"),
        fpr: float = typer.Option(0.01, "--fpr", help="false-positive rate on the benign texts, per length bin"),
        window: int = typer.Option(10, "--window", help="tokens per window"),
        min_per_bin: int = typer.Option(30, "--min-per-bin", help="merge length bins with fewer texts"),
        device: str = _common.DeviceOpt,
    ) -> None:
        """Calibrate the filter's thresholds on benign texts to a false-positive rate, per length bin."""
        from ..scorers import PerplexityConfig, calibrate_perplexity

        config = PerplexityConfig(window=window, fpr=fpr, min_per_bin=min_per_bin)
        if out is None:
            if probe is None:
                raise RiskscopeError("give --out FILE (or --probe RUN to write RUN/perplexity.json)")
            out = probe / "perplexity.json"
        if input_file is not None:
            texts, source = read_texts(None, input_file), str(input_file)
        else:
            from ..data import load_dataset

            texts, source = load_dataset("cyber_risk_pairs").texts, "built-in cyber_risk_pairs"
        lm = _model(probe, model, device)
        with _err.status(f"calibrating on {len(texts)} texts ..."):
            cal = calibrate_perplexity(lm, texts, config, meta={"texts": source})
        cal.save(out)
        for b in cal.bins:
            hi = "inf" if b.max_tokens is None else b.max_tokens
            _out.print(f"tokens {b.min_tokens}-{hi}: threshold {b.threshold:.3f} nats ({b.n} texts)", highlight=False)
        _err.print(f"wrote {out}")

    @ppl.command("score")
    def score(
        texts: Optional[List[str]] = typer.Argument(None, help="texts to score (or --input)"),
        input_file: Optional[Path] = typer.Option(None, "--input", "-i", help=".jsonl with 'text' or .txt lines"),
        calibration: Optional[Path] = typer.Option(None, "--calibration", "-c", help="calibration JSON"),
        probe: Optional[Path] = typer.Option(None, "--probe", "-p", help="run folder holding perplexity.json"),
        explain: bool = typer.Option(False, "--explain", help="show every window's log perplexity"),
        as_json: bool = typer.Option(False, "--jsonl", help="JSONL out: one object per text"),
        device: str = _common.DeviceOpt,
    ) -> None:
        """Score texts: worst-window log perplexity, its length bin's threshold, flagged or not."""
        from ..models import load_model
        from ..scorers import PerplexityCalibration, PerplexityFilter

        if calibration is None:
            if probe is None:
                raise RiskscopeError("give --calibration FILE or --probe RUN (with RUN/perplexity.json)")
            calibration = probe / "perplexity.json"
        cal = PerplexityCalibration.load(calibration)
        items = read_texts(texts, input_file)
        lm = load_model(cal.model_id, device=device)
        filt = PerplexityFilter(lm, cal)
        tps = filt.measure(items)
        for text, tp in zip(items, tps):
            thr = cal.threshold_for(tp.n_tokens)
            row = {"score": round(tp.score, 4), "threshold": round(thr, 4), "flagged": tp.score >= thr,
                   **filt.explain(tp)}
            if as_json:
                sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
                continue
            mark = "[bold red]FLAGGED[/bold red]" if row["flagged"] else "ok"
            _out.print(f"{mark}\t{tp.score:.3f} / {thr:.3f}\t{text}", soft_wrap=True)
            for span in row["anomalous_spans"]:
                _out.print(f"    anomalous tokens {span['start']}-{span['end']}: {span['text']!r} "
                           f"({span['log_ppl']:.2f} nats)", highlight=False, soft_wrap=True)
            if explain:
                dec = lm.tokenizer.decode
                for k in range(len(tp.means)):
                    a, b = tp.token_span(k)
                    hot = "*" if tp.means[k] >= thr else " "
                    _out.print(f"  {hot} [{a:>4},{b:>4}) {tp.means[k]:7.3f}  {dec(list(tp.ids[a:b]))!r}",
                               highlight=False, soft_wrap=True)


def _model(probe: Optional[Path], model: Optional[str], device: str):
    if probe is not None:
        from ..probes import Probe

        with _err.status("loading the probe's model ..."):
            return Probe.load(probe).load_model(device=device)
    from ..models import load_model

    with _err.status(f"loading model {model or 'default'} ..."):
        return load_model(model or "default", device=device)


__all__ = ["read_texts", "register"]
