"""The risk-scoring service, end to end: the real server (uvicorn, in a thread or a subprocess) on an
ephemeral loopback port, a tiny real model folder and a run folder made through the CLI. No mocks of
the HTTP layer: requests go over TCP with httpx or a raw socket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tinyhf import build_tiny_hf  # noqa: E402

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
TEXTS = [
    "The ward nurse emailed the discharge list to her personal webmail.",
    "The team shared the spreadsheet with the vendor.",
    "A new router was installed and the default password was kept.",
    "Please summarise the quarterly report.",
    "ok",
    "The fitness app requested access to contacts, calendar, location and the microphone at every launch.",
]


def _pairs(n: int) -> list[dict]:
    from riskscope.data import load_dataset

    by_pair: dict[str, list] = {}
    for r in load_dataset("cyber_risk_pairs").rows:
        by_pair.setdefault(r.pair_id, []).append(r)
    return [{"id": r.id, "text": r.text[:160], "label": r.label, "pair_id": r.pair_id, "category": r.category,
             "severity": r.severity} for pid in list(by_pair)[:n] for r in by_pair[pid]]


def _cli(args: list[str]) -> int:
    from riskscope.cli import main

    old = sys.argv
    sys.argv = ["riskscope", *args]
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0


@pytest.fixture(scope="module")
def world(tmp_path_factory, module_home):
    """A tiny model folder, a 10-pair dataset, a run folder with its probe (made by `riskscope run`), key files."""
    root = tmp_path_factory.mktemp("service_world")
    model = build_tiny_hf(root / "model")
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _pairs(10)))
    run = root / "run"
    code = _cli(["run", "--model", str(model), "--dataset", str(data), "--out", str(run), "--folds", "2",
                 "--n-bootstrap", "20", "--skip", "all", "--no-report"])
    assert code == 0 and (run / "probe" / "bundle.json").is_file()
    keys = root / "keys.txt"
    keys.write_text(f"# test keys\n{KEY_A}\n{KEY_B} 0.001 2\n")
    yield {"root": root, "model": model, "run": run, "keys": keys}


@pytest.fixture(scope="module")
def direct(world):
    """The probe and its model in process: what the server's answers are checked against."""
    from riskscope.probes import Probe

    probe = Probe.load(world["run"])
    return probe, probe.load_model()


def _config(world, **kw):
    from riskscope.service import ServeConfig

    return ServeConfig(probe=str(world["run"]), port=0, **{"rate_limit": 0.0, **kw})


def _server(world, **kw):
    from riskscope.service import ServerThread

    return ServerThread(_config(world, **kw))


def _metrics(url: str) -> dict[str, float]:
    """``{'name{label="v"}': value}`` parsed with prometheus_client's own parser."""
    out = {}
    for fam in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _wait_metric(url: str, name: str, at_least: float = 1.0, timeout: float = 20.0) -> float:
    t0 = time.monotonic()
    while True:
        value = _metrics(url).get(name, 0.0)
        if value >= at_least or time.monotonic() - t0 > timeout:
            return value
        time.sleep(0.05)


def _read_reply(s: socket.socket) -> str:
    """Headers and body of one HTTP/1.1 answer read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data.decode()
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


# --------------------------------------------------------------------------------------------------
# scores


def test_scores_match_the_probe_and_carry_versions(world, direct):
    from riskscope.scorers import bundle_digest

    probe, lm = direct
    expected = probe.score(TEXTS, lm=lm)
    with _server(world) as server:
        server.wait_ready()
        r = httpx.post(server.url + "/v1/score", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"id": lm.model_id, "weights_hash": lm.weight_hash}
    assert body["probe"]["version"] == bundle_digest(world["run"])
    assert (body["probe"]["hook"], body["probe"]["layer"]) == (probe.hook, probe.layer)
    got = np.array([x["risk_score"] for x in body["results"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert [x["index"] for x in body["results"]] == list(range(len(TEXTS)))
    for x in body["results"]:
        assert x["risky"] == (x["risk_score"] >= x["threshold"]) and x["threshold"] == probe.threshold
        assert not x["truncated"] and x["tokens"] == x["tokens_scored"] and "perplexity" not in x


def test_bfloat16_server_scores_the_bfloat16_model(world, direct):
    """--dtype bfloat16 loads the model in bfloat16: its answers are the in-process bfloat16 scores, and
    stay near the float32 ones (the probe itself computes in float64)."""
    import torch

    from riskscope.service import ServeConfig

    probe, lm = direct
    lm16 = probe.load_model(dtype="bfloat16")
    assert next(lm16.model.parameters()).dtype == torch.bfloat16
    expected = probe.score(TEXTS, lm=lm16)
    with _server(world, dtype="bfloat16") as server:
        server.wait_ready()
        r = httpx.post(server.url + "/v1/score", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    got = np.array([x["risk_score"] for x in r.json()["results"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, probe.score(TEXTS, lm=lm), rtol=0, atol=0.1)
    from riskscope.errors import RiskscopeError

    with pytest.raises(RiskscopeError, match="unknown dtype"):
        ServeConfig(probe=str(world["run"]), dtype="int3")


def test_concurrent_requests_are_batched_and_equal_to_singles(world):
    """Scores from one micro-batch of concurrent requests equal scores of each request run alone (1e-5)."""
    texts = [t + " " + "word " * k for k in range(4) for t in TEXTS]
    with _server(world, batching=False) as server:
        server.wait_ready()
        alone = [httpx.post(server.url + "/v1/score", json={"texts": [t]}).json()["results"][0]["risk_score"]
                 for t in texts]
        assert _metrics(server.url)["riskscope_batch_requests_sum"] == len(texts)  # one forward each

    async def together(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            rs = await asyncio.gather(*[client.post("/v1/score", json={"texts": [t]}) for t in texts])
        return [r.json()["results"][0]["risk_score"] for r in rs]

    with _server(world, max_wait_ms=300, max_batch=64) as server:
        server.wait_ready()
        batched = asyncio.run(together(server.url))
        m = _metrics(server.url)
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    assert m["riskscope_batch_requests_sum"] == len(texts)
    assert m["riskscope_batch_requests_count"] < len(texts)  # some forward held several requests
    assert m["riskscope_texts_scored_total"] == len(texts)


# --------------------------------------------------------------------------------------------------
# limits and errors: always a JSON error body with a 4xx, never a 500


BAD_BODIES = [
    (b"{", 400, "bad_json"),
    (b"", 400, "bad_json"),
    (b"\xff\xfe{}", 400, "bad_json"),
    (b"[]", 422, "invalid"),
    (b'"texts"', 422, "invalid"),
    (b"null", 422, "invalid"),
    (b"{}", 422, "invalid"),
    (b'{"texts": "one text"}', 422, "invalid"),
    (b'{"texts": []}', 422, "invalid"),
    (b'{"texts": [1]}', 422, "invalid"),
    (b'{"texts": [null]}', 422, "invalid"),
    (b'{"texts": [["nested"]]}', 422, "invalid"),
    (b'{"texts": ["ok", {"text": "x"}]}', 422, "invalid"),
    (b'{"texts": [""]}', 422, "empty_text"),
    (b'{"texts": ["fine", "  \\n\\t "]}', 422, "empty_text"),
    (b'{"texts": ["a"], "extra": true}', 422, "invalid"),
    (b'{"texts": ["a"]} trailing', 400, "bad_json"),
    (json.dumps({"texts": ["x"] * 9}).encode(), 413, "too_many_texts"),
    (json.dumps({"texts": ["word " * 100]}).encode(), 413, "text_too_long"),
    (json.dumps({"texts": ["y" * 5000]}).encode(), 413, "body_too_large"),
]


def test_bad_requests_get_a_4xx_json_error(world):
    with _server(world, max_texts=8, max_tokens=64, max_body_bytes=4096) as server:
        server.wait_ready()
        for body, status, code in BAD_BODIES:
            r = httpx.post(server.url + "/v1/score", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (body[:60], r.status_code, r.text)
            err = r.json()["error"]
            assert err["code"] == code and err["message"], (body[:60], err)
        for method, path in (("GET", "/v1/score"), ("GET", "/nowhere"), ("DELETE", "/healthz")):
            r = httpx.request(method, server.url + path)
            assert 400 <= r.status_code < 500 and r.json()["error"]["code"], (method, path, r.text)
        assert httpx.post(server.url + "/v1/score", json={"texts": ["still serving"]}).status_code == 200
        m = _metrics(server.url)
    assert not any(k.startswith("riskscope_requests_total") and 'status="5' in k for k in m)
    assert m['riskscope_rejections_total{reason="text_too_long"}'] == 1
    assert m['riskscope_rejections_total{reason="body_too_large"}'] == 1


def test_truncate_cuts_long_texts_and_says_so(world, direct):
    probe, lm = direct
    long_text = "The router kept its default password for convenience. " * 20
    with _server(world, max_tokens=24, truncate=True) as server:
        server.wait_ready()
        r = httpx.post(server.url + "/v1/score", json={"texts": [long_text, "short one"]})
        m = _metrics(server.url)
    assert r.status_code == 200, r.text
    cut, short = r.json()["results"]
    assert cut["truncated"] and cut["tokens"] > 24 >= cut["tokens_scored"] > 0
    assert not short["truncated"] and short["tokens"] == short["tokens_scored"]
    assert r.json()["truncated"] == 1 and m["riskscope_truncated_texts_total"] == 1


def test_request_timeout_is_a_504(world):
    with _server(world, max_wait_ms=2000, request_timeout_s=0.2) as server:
        server.wait_ready()
        r = httpx.post(server.url + "/v1/score", json={"texts": ["slow batch"]})
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert _metrics(server.url)['riskscope_rejections_total{reason="timeout"}'] == 1


# --------------------------------------------------------------------------------------------------
# auth and rate limits


def test_api_keys_are_required_and_checked(world):
    with _server(world, api_key_file=str(world["keys"])) as server:
        server.wait_ready()
        url = server.url + "/v1/score"
        body = {"texts": ["hello"]}
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": f"Basic {KEY_A}"}).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": "Bearer " + KEY_A[:-1]}).status_code == 401
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY_A}"})
        assert r.status_code == 200, r.text
        assert httpx.post(url, json=body, headers={"X-API-Key": KEY_A}).status_code == 200
        assert httpx.get(server.url + "/healthz").status_code == 200
        unauth = httpx.post(url, json=body)
        assert unauth.headers["www-authenticate"] == "Bearer" and unauth.json()["error"]["code"] == "unauthorized"
        assert _metrics(server.url)['riskscope_rejections_total{reason="unauthorized"}'] == 5


def test_rate_limit_is_per_key(world):
    """KEY_B may send 2 requests at once and then 0.001/s; KEY_A has the server's (generous) limit."""
    with _server(world, api_key_file=str(world["keys"]), rate_limit=1000.0, rate_burst=1000) as server:
        server.wait_ready()
        url = server.url + "/v1/score"
        b = [httpx.post(url, json={"texts": ["x"]}, headers={"X-API-Key": KEY_B}) for _ in range(4)]
        assert [r.status_code for r in b] == [200, 200, 429, 429]
        assert int(b[2].headers["retry-after"]) >= 1 and b[2].json()["error"]["code"] == "rate_limited"
        assert httpx.post(url, json={"texts": ["x"]}, headers={"X-API-Key": KEY_A}).status_code == 200
        assert _metrics(server.url)['riskscope_rejections_total{reason="rate_limited"}'] == 2


def test_rate_limit_without_keys_is_per_client(world):
    with _server(world, rate_limit=0.001, rate_burst=3) as server:
        server.wait_ready()
        codes = [httpx.post(server.url + "/v1/score", json={"texts": ["x"]}).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert httpx.get(server.url + "/healthz").status_code == 200  # only scoring is limited


# --------------------------------------------------------------------------------------------------
# readiness, metrics, schema


def test_ready_only_once_the_model_has_loaded(world):
    from riskscope.service import Engine, ServerThread

    gate = threading.Event()

    class GatedEngine(Engine):  # the real engine; its load waits for the test
        def load(self):
            gate.wait(30)
            super().load()

    config = _config(world)
    with ServerThread(config, engine=GatedEngine(config)) as server:
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(server.url + "/v1/score", json={"texts": ["early"]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready" and "retry-after" in r.headers
        assert _metrics(server.url)["riskscope_ready"] == 0
        gate.set()
        server.wait_ready()
        assert httpx.get(server.url + "/readyz").json()["status"] == "ready"
        assert httpx.post(server.url + "/v1/score", json={"texts": ["now"]}).status_code == 200
        assert _metrics(server.url)["riskscope_ready"] == 1


def test_metrics_count_requests_latency_and_batches(world):
    with _server(world) as server:
        server.wait_ready()
        for n in (1, 3):
            assert httpx.post(server.url + "/v1/score", json={"texts": TEXTS[:n]}).status_code == 200
        text = httpx.get(server.url + "/metrics").text
        m = _metrics(server.url)
    assert m['riskscope_requests_total{path="/v1/score",status="200"}'] == 2
    assert m['riskscope_request_seconds_count{path="/v1/score"}'] == 2
    assert m["riskscope_batch_texts_sum"] == 4 and m["riskscope_texts_scored_total"] == 4
    for name in ("riskscope_slow_clients_total", "riskscope_dropped_connections_total", "riskscope_queue_texts"):
        assert name in m, name
    assert "# TYPE riskscope_request_seconds histogram" in text


def test_openapi_schema_describes_the_api(world):
    with _server(world) as server:
        schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/score", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    req = schema["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert req["required"] == ["texts"] and req["properties"]["texts"]["type"] == "array"
    assert "413" in schema["paths"]["/v1/score"]["post"]["responses"]


# --------------------------------------------------------------------------------------------------
# misbehaving clients: the server keeps serving and counts them


def test_slow_client_gets_408_and_is_counted(world):
    with _server(world, body_timeout_s=0.3) as server:
        server.wait_ready()
        with socket.create_connection(_hostport(server.url), timeout=10) as s:
            s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"texts\": [")
            reply = _read_reply(s)
        assert reply.startswith("HTTP/1.1 408") and "slow_client" in reply
        assert httpx.post(server.url + "/v1/score", json={"texts": ["after"]}).status_code == 200
        assert _metrics(server.url)["riskscope_slow_clients_total"] == 1


def test_dropped_connections_are_counted(world):
    body = json.dumps({"texts": ["dropped while waiting"]}).encode()
    head = (f"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with _server(world, max_wait_ms=1500) as server:
        server.wait_ready()
        with socket.create_connection(_hostport(server.url)) as s:  # gone while its batch waits
            s.sendall(head + body)
            time.sleep(0.3)
        with socket.create_connection(_hostport(server.url)) as s:  # gone mid-body
            s.sendall(head + body[:5])
        assert _wait_metric(server.url, "riskscope_dropped_connections_total", 2) == 2
        assert httpx.post(server.url + "/v1/score", json={"texts": ["after"]}, timeout=30).status_code == 200


# --------------------------------------------------------------------------------------------------
# the command line


def test_serve_refuses_a_public_host_without_keys(world, capsys):
    code = _cli(["serve", "--probe", str(world["run"]), "--host", "0.0.0.0", "--port", "0"])
    assert code == 2 and "--api-key-file" in capsys.readouterr().err


def test_serve_command_answers_the_readme_example(world, tmp_path):
    """`riskscope serve` in a subprocess, then the README's curl request (sent with httpx)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "riskscope.cli", "serve", "--probe", str(world["run"]), "--port",
                             "0", "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        url = match.group(1)
        t0 = time.monotonic()
        while httpx.get(url + "/readyz").status_code != 200:
            assert proc.poll() is None and time.monotonic() - t0 < 120, "the server did not become ready"
            time.sleep(0.1)
        readme = ["The nurse emailed patient records to her personal webmail.", "The team met to plan the picnic."]
        r = httpx.post(url + "/v1/score", json={"texts": readme})
        assert r.status_code == 200 and len(r.json()["results"]) == 2
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode in (0, -15), proc.returncode


def test_the_listening_socket_turns_nagle_off_for_every_connection():
    """With Nagle on, each answer's body waited ~40 ms for the client's delayed ACK of its headers (seen: GET
    /healthz 44 ms through httpx). asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP."""
    from riskscope.service._server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname()[:2])
        sock.setblocking(True)
        conn, _ = sock.accept()
        try:
            assert conn.proto == socket.IPPROTO_TCP
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            conn.close()
            client.close()
    finally:
        sock.close()
