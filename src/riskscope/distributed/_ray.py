"""Caching on Ray: one actor per worker loads the model once and writes whole chunks; the driver merges.

The unit of work is one chunk range of the length-sorted rows (the store's own unit of
resumption). The driver checks every input, starts the actors, refuses to go on unless
every actor's model has the driver's weight hash and store fingerprint, and only then
writes the store's skeleton. Each actor writes whole chunks with the store's own atomic
writer (:class:`riskscope.data.ChunkWriter`); the driver alone writes the manifest
(:class:`riskscope.data.ChunkedStore`). A killed actor is restarted by Ray
(``max_restarts``) and its chunk retried (``max_task_retries``); a chunk is a pure
function of the inputs, so the store is the same as an uninterrupted run's.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..data import CacheConfig, ChunkedStore, ChunkWriter, ChunkWritten, Dataset, check_store, store_fingerprint
from ..errors import RiskscopeError
from ..models import LoadedModel, load_model
from ._config import DistributedConfig, DistributedError, ModelSpec, check_engine, check_reachable

_POLL_S = 0.2


class CacheWorker:
    """One Ray actor: loads the model once, then writes the chunks it is given.

    The dataset and the progress board come as ``[dataset ObjectRef, board]`` with each call (the dataset fetched
    once, kept): the driver holds both for the whole job, so a restarted actor can always fetch them again, and
    the constructor's arguments stay small and inline.
    """

    def __init__(self, model: ModelSpec, out: str, cfg: CacheConfig, fingerprint: str, threads: int,
                 on_batch: Callable[[int, int], None] | None = None):
        import torch

        torch.set_num_threads(threads)
        self.lm = load_model(model.spec, **model.load_kwargs())
        self.out, self.cfg, self.fingerprint = out, cfg, fingerprint
        self.on_batch = on_batch
        self.data: Dataset | None = None
        self.writer: ChunkWriter | None = None
        self.cpu_seconds = 0.0

    def _dataset(self, box: list) -> Dataset:
        if self.data is None:
            import ray

            self.data = ray.get(box[0])
        return self.data

    def ready(self, box: list) -> dict:
        """Who this worker is and what it would write (compared with the driver's before anything is written)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "weight_hash": self.lm.weight_hash,
                "fingerprint": store_fingerprint(self.lm, self._dataset(box), self.cfg), "device": str(self.lm.device),
                "cpu_seconds": self.cpu_seconds}

    def write(self, c: int, box: list) -> ChunkWritten:
        if self.writer is None:
            self.writer = ChunkWriter(self.lm, self._dataset(box), self.out, self.cfg, self.fingerprint)
        done = 0

        def batch(n: int, total: int) -> None:
            nonlocal done
            done += n
            box[1].report.remote(c, done)
            if self.on_batch is not None:
                self.on_batch(c, done)

        t0 = time.process_time()
        try:
            return self.writer.write(c, batch)
        finally:
            self.cpu_seconds += time.process_time() - t0


class ProgressBoard:
    """Rows done per chunk, as workers report them (a retried chunk counts once)."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def report(self, c: int, rows: int) -> None:
        self.done[c] = max(self.done.get(c, 0), rows)

    def total(self) -> int:
        return sum(self.done.values())


@dataclass(frozen=True)
class DistributedStats:
    """What a distributed caching run did."""

    chunks_total: int
    chunks_written: int
    chunks_reused: int
    tokens: int
    padded_fraction: float
    seconds: float
    """Wall time of the whole call (cluster start and model loads included)."""
    seconds_writing: float
    """Wall time from the first chunk handed out to the store marked complete."""
    workers: tuple[dict, ...]
    """Each worker's host, pid, device, chunks written and CPU seconds spent writing them (this process)."""
    restarts: int
    """Workers that Ray restarted during the job (their process changed): each one's chunk was retried."""


def _unwrap(e: BaseException) -> BaseException:
    """A riskscope error raised inside a worker, as itself; anything else as one clear line."""
    import ray.exceptions as rex

    cause = getattr(e, "cause", None)
    if isinstance(cause, RiskscopeError):
        return cause
    if isinstance(e, rex.RayActorError):
        text = str(e).strip().splitlines()
        return DistributedError(f"a worker died and could not be restarted ({text[0] if text else type(e).__name__})"
                                f"; the chunks finished so far are kept: re-run the same command to resume")
    first = next((ln.strip() for ln in str(cause or e).splitlines() if ln.strip()), type(e).__name__)
    return DistributedError(f"a worker failed: {first[:300]}")


def _connect(dist: DistributedConfig) -> bool:
    """Connect to (or start) the cluster; True when this call started the connection (and must shut it)."""
    import ray

    if ray.is_initialized():
        return False
    if dist.address is not None:
        check_reachable(dist.address, dist.connect_timeout)
        try:
            ray.init(address=dist.address, logging_level=logging.ERROR, log_to_driver=False,
                     runtime_env={"env_vars": dist.env} if dist.env else None)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise DistributedError(f"--address {dist.address}: cannot connect to the Ray cluster ({str(e)[:200]}); "
                                   f"check that its Ray version is {ray.__version__} and, if it uses token "
                                   f"authentication, set RAY_AUTH_MODE=token with its token in ~/.ray/auth_token") \
                from None
        return True
    need_cpus = dist.workers * dist.cpus_per_worker
    gpus = int(dist.workers * dist.gpus_per_worker + 0.999) or None
    ray.init(address="local", num_cpus=need_cpus, num_gpus=gpus, include_dashboard=False,
             object_store_memory=dist.object_store_mb * 1024 * 1024, logging_level=logging.ERROR,
             log_to_driver=False, runtime_env={"env_vars": dist.env} if dist.env else None)
    return True


def _check_resources(dist: DistributedConfig) -> None:
    import ray

    have = ray.cluster_resources()
    need = {"CPU": dist.workers * dist.cpus_per_worker, "GPU": dist.workers * dist.gpus_per_worker}
    for kind, n in need.items():
        if n and have.get(kind, 0) < n:
            raise DistributedError(f"--workers {dist.workers} needs {n:g} {kind}(s) on the cluster, which has "
                                   f"{have.get(kind, 0):g}; use fewer workers")


def _check_workers(infos: list[dict], weight_hash: str, fingerprint: str) -> None:
    """Every worker must have the driver's weights and would write the driver's chunks."""
    for i, info in enumerate(infos):
        if info["weight_hash"] != weight_hash:
            raise DistributedError(f"worker {i} on {info['host']} has other model weights (weight hash "
                                   f"{info['weight_hash'][:16]}..., the driver's {weight_hash[:16]}...); give every "
                                   f"host the same model files")
        if info["fingerprint"] != fingerprint:
            raise DistributedError(f"worker {i} on {info['host']} would write other chunks (store fingerprint "
                                   f"{info['fingerprint'][:16]}..., the driver's {fingerprint[:16]}...); give every "
                                   f"host the same model, dtype and riskscope version")


def _run_chunks(store: ChunkedStore, workers: list, board: Any, box: list, total: int,
                progress: Callable[[int, int], None] | None) -> list[int]:
    """Hand each pending chunk to an idle worker, record each finished one, advance ``progress`` as workers
    report batches; returns the chunks each worker wrote."""
    import ray

    for c in range(store.n_chunks):
        if c not in store.pending:
            board.report.remote(c, store.rows_in(c))
    shown = 0
    queue = list(store.pending)
    running: dict[Any, tuple[int, int]] = {}
    written = [0] * len(workers)
    free = list(range(len(workers)))
    while queue or running:
        while queue and free:
            w, c = free.pop(0), queue.pop(0)
            running[workers[w].write.remote(c, box)] = (w, c)
        ready, _ = ray.wait(list(running), num_returns=1, timeout=_POLL_S)
        for ref in ready:
            w, c = running.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:
                raise _unwrap(e) from None
            store.add(result)
            written[w] += 1
            free.append(w)
            board.report.remote(c, store.rows_in(c))
        now = ray.get(board.total.remote())  # after the reports above: calls to one actor run in order
        if progress and now > shown:
            progress(now - shown, total)
            shown = now
    return written


def cache_distributed(
    lm: LoadedModel,
    model: ModelSpec,
    data: Dataset,
    out: str | Path,
    cfg: CacheConfig,
    dist: DistributedConfig,
    progress: Callable[[int, int], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> DistributedStats:
    """Write the store ``out`` with ``dist.workers`` Ray actors; the same store as
    :func:`riskscope.data.cache_activations` on ``lm`` writes.

    ``lm`` is the driver's copy of the model (its weight hash, tokenizer and layout plan the work);
    ``model`` says how each worker loads its own. Every check that can fail (inputs, the store
    directory, the engine, the cluster address and resources, every worker's weight hash) runs
    before the store is created. ``progress(rows, total)`` is called as workers report batches;
    ``on_batch(chunk, rows_done)`` runs inside the worker after each batch (tests use it to kill one).
    """
    t0 = time.perf_counter()
    check_engine(dist.engine)
    if dist.engine != "ray":
        raise DistributedError("cache_distributed needs engine 'ray'; use cache_activations for one process")
    check_store(lm, data, out, cfg)
    fingerprint = store_fingerprint(lm, data, cfg)
    import ray

    started = _connect(dist)
    handles: list = []
    try:
        _check_resources(dist)
        board = ray.remote(num_cpus=0)(ProgressBoard).remote()
        handles.append(board)
        actor = ray.remote(num_cpus=dist.cpus_per_worker, num_gpus=dist.gpus_per_worker,
                           max_restarts=dist.max_retries, max_task_retries=dist.max_retries)(CacheWorker)
        box = [ray.put(data), board]  # held here until the end: a restarted worker fetches them again
        workers = [actor.remote(model, str(Path(out).resolve()), cfg, fingerprint, dist.cpus_per_worker, on_batch)
                   for _ in range(dist.workers)]
        handles += workers
        try:
            infos = ray.get([w.ready.remote(box) for w in workers])
        except Exception as e:
            raise _unwrap(e) from None
        _check_workers(infos, lm.weight_hash, fingerprint)
        store = ChunkedStore.prepare(lm, data, out, cfg)
        t_write = time.perf_counter()
        written = _run_chunks(store, workers, board, box, len(data), progress)
        stats = store.finish()
        seconds_writing = time.perf_counter() - t_write
        after = ray.get([w.ready.remote(box) for w in workers])
        restarts = sum(1 for a, b in zip(after, infos) if a["pid"] != b["pid"])
        return DistributedStats(
            chunks_total=stats.chunks_total, chunks_written=stats.chunks_written, chunks_reused=store.reused,
            tokens=stats.tokens, padded_fraction=stats.padded_fraction, seconds=time.perf_counter() - t0,
            seconds_writing=seconds_writing, restarts=restarts,
            workers=tuple({"host": a["host"], "pid": a["pid"], "device": a["device"], "chunks": n,
                           "cpu_seconds": round(a["cpu_seconds"], 3)}
                          for a, n in zip(after, written)))
    finally:
        if started:
            ray.shutdown()
        else:  # a cluster the caller connected to: end only the actors this call started
            for handle in handles:
                ray.kill(handle)


__all__ = ["CacheWorker", "DistributedStats", "ProgressBoard", "cache_distributed"]
