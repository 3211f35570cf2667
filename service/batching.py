"""A micro-batcher: concurrent requests are gathered and processed as one batch, so the
click path pays one Redis round trip and one ``advance`` / ``score`` run per batch instead
of per request.

A batch starts as soon as a processing slot is free (at most ``max_concurrent`` batches
run at once: one can wait on Redis while another runs inference) — after at most
``max_wait`` seconds when that is set, to gather more jobs. While every slot is busy, jobs
queue up and the next free slot takes up to ``max_size`` of them: under load batches grow
by themselves, and a lone request is never delayed by more than ``max_wait``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")



class MicroBatcher(Generic[J, R]):
    def __init__(self, process: Callable[[list[J]], Awaitable[list[R | BaseException]]], *,
                 max_size: int = 64, max_wait: float = 0.0, max_concurrent: int = 2,
                 on_idle: Callable[[], None] | None = None) -> None:
        if max_size < 1 or max_concurrent < 1 or max_wait < 0:
            raise ValueError("max_size and max_concurrent must be >= 1, max_wait >= 0")
        self.process = process
        self.max_size = max_size
        self.max_wait = max_wait
        self.max_concurrent = max_concurrent
        self.on_idle = on_idle
        self._queue: list[tuple[J, asyncio.Future[R]]] = []
        self._in_flight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: batch sizes processed so far (for /metrics): count and sum
        self.batches = 0
        self.jobs = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, job: J) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        self._maybe_start()
        return await future

    def _maybe_start(self) -> None:
        while self._queue and self._in_flight < self.max_concurrent:
            if len(self._queue) < self.max_size and self.max_wait > 0 and self._in_flight == 0:
                # Idle: wait a little for batch-mates (bounded by max_wait).
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(self.max_wait,
                                                                        self._on_timer)
                return
            self._start()

    def _on_timer(self) -> None:
        self._timer = None
        if self._queue and self._in_flight < self.max_concurrent:
            self._start()

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue[:self.max_size], self._queue[self.max_size:]
        self._in_flight += 1
        self.batches += 1
        self.jobs += len(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[J, asyncio.Future[R]]]) -> None:
        results: list[R | BaseException]
        try:
            results = await self.process([job for job, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} jobs gave {len(results)} results")
        except Exception as exc:  # the whole batch failed (e.g. Redis unreachable)
            results = [exc] * len(batch)
        finally:
            self._in_flight -= 1
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._maybe_start()
        if not self._queue and self._in_flight == 0 and self.on_idle is not None:
            self.on_idle()

    async def drain(self) -> None:
        """Wait for every queued and running batch (shutdown)."""
        while self._queue or self._tasks:
            if self._queue and self._in_flight < self.max_concurrent:
                self._start()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
