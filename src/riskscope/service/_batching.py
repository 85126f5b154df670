"""Micro-batching: concurrent requests gathered into one padded forward, run in one worker thread.

Requests queue on the event loop. One collector task takes the first waiting request, then every
request that arrives within ``max_wait_s`` or is already queued, up to ``max_texts`` texts, and runs
them as one call of ``run(texts)`` in a single worker thread (the model is used by that thread
only; the batch mask is context-local in any case). Results are split back per request. While
the worker runs a batch, the next requests gather, so under load batches fill by themselves.

With ``enabled=False`` each request runs alone: the same server, one forward per request.

>>> import asyncio
>>> async def demo():
...     b = MicroBatcher(lambda texts: [len(t) for t in texts], max_texts=8, max_wait_s=0.01)
...     b.start()
...     out = await asyncio.gather(b.submit(["ab"]), b.submit(["c", "def"]))
...     await b.stop()
...     return out, b.batches
>>> asyncio.run(demo())
([[2], [1, 3]], 1)
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import RiskscopeError


class QueueFull(RiskscopeError):
    """More texts wait for the model than the queue holds."""


@dataclass
class _Item:
    texts: Sequence[Any]
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Gather concurrent ``submit(texts)`` calls into batches for ``run`` (called in one worker thread).

    ``run(texts) -> list`` must return one result per text, in order. ``on_batch(n_texts, n_requests,
    seconds)`` is called after each batch (metrics).
    """

    def __init__(self, run: Callable[[list], list], *, max_texts: int = 64, max_wait_s: float = 0.002,
                 enabled: bool = True, max_queue: int = 4096,
                 on_batch: Callable[[int, int, float], None] | None = None,
                 initializer: Callable[[], None] | None = None) -> None:
        self.run = run
        self.max_texts = int(max_texts)
        self.max_wait_s = float(max_wait_s)
        self.enabled = enabled
        self.max_queue = int(max_queue)
        self.on_batch = on_batch
        self.batches = 0
        self.queued_texts = 0
        self._queue: asyncio.Queue[_Item] | None = None
        self._carry: _Item | None = None
        self._running: list[_Item] = []
        self._task: asyncio.Task | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="riskscope-forward",
                                        initializer=initializer)

    def start(self) -> None:
        """Start the collector on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="riskscope-batcher")

    async def stop(self) -> None:
        """Stop collecting; waiting requests get a :class:`RiskscopeError`; the worker thread ends."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            pending = [*self._running, *([self._carry] if self._carry else [])]
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            for item in pending:
                if not item.future.done():
                    item.future.set_exception(RiskscopeError("the server is shutting down"))
        self._pool.shutdown(wait=True)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` in the worker thread (e.g. loading the model there), between batches."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def submit(self, texts: Sequence[Any]) -> list:
        """Results for ``texts`` (one per text), computed in some batch. Cancelling drops them from the queue
        if their batch has not started yet."""
        if self._queue is None:
            raise RiskscopeError("the batcher is not running")
        if self.queued_texts + len(texts) > self.max_queue:
            raise QueueFull(f"{self.queued_texts} texts are waiting for the model; the queue holds {self.max_queue}")
        item = _Item(texts, asyncio.get_running_loop().create_future())
        self.queued_texts += len(texts)
        self._queue.put_nowait(item)
        try:
            return await item.future
        finally:
            if not item.future.done():  # cancelled while waiting
                item.future.cancel()

    async def _next(self, timeout: float | None) -> _Item | None:
        if self._carry is not None:
            item, self._carry = self._carry, None
            return item
        assert self._queue is not None
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def _take(self, item: _Item) -> bool:
        """Account for ``item`` leaving the queue; False when its request was cancelled meanwhile."""
        self.queued_texts -= len(item.texts)
        return not item.future.done()

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._next(None)
            if first is None or not self._take(first):
                continue
            batch, n = [first], len(first.texts)
            if self.enabled:
                deadline = loop.time() + self.max_wait_s
                while n < self.max_texts:
                    item = await self._next(deadline - loop.time())
                    if item is None:
                        break
                    if n + len(item.texts) > self.max_texts:
                        self._carry = item  # first of the next batch
                        break
                    if self._take(item):
                        batch.append(item)
                        n += len(item.texts)
            texts = [t for item in batch for t in item.texts]
            t0 = time.perf_counter()
            self._running = batch
            try:
                results = await loop.run_in_executor(self._pool, self.run, texts)
                if len(results) != len(texts):
                    raise RiskscopeError(f"the scorer gave {len(results)} results for {len(texts)} texts")
            except Exception as e:  # every waiting request gets the error
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            finally:
                self._running = []
            seconds = time.perf_counter() - t0
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(texts), len(batch), seconds)
            i = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(results[i:i + len(item.texts)])
                i += len(item.texts)


__all__ = ["MicroBatcher", "QueueFull"]
