"""Dynamic batching: requests that arrive together share one ``generate`` call on a model thread.

A model call on a 7B VLM costs about as much for 8 rows as for 1 (the GPU is memory-bound at
small batch), so answering concurrent requests one by one wastes most of it. One asyncio task
takes the first pending job, collects more for a few milliseconds (up to ``max_batch``) and runs
the single-turn ones with equal sampling settings as ONE ``backend.generate`` call; multi-turn
conversations go through ``backend.chat`` one at a time. Jobs that pile up while the model is busy
form the next batch at once. The window is only waited out while another request is still being
read and checked (``arriving``), so a lone request on an idle server goes straight to the model.
Model calls run on one dedicated thread (the model is not thread-safe), so the event loop keeps
accepting requests and answering ``/health`` meanwhile. A batch whose call fails is retried
row by row, so one bad request fails alone; ``max_queue`` bounds the jobs waiting for the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from selfsynth.serve.protocol import GenParams

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue already holds ``max_queue`` jobs; the caller should come back later."""


class Backend(Protocol):
    """What the server needs of a model (``selfsynth.models.vlm.VLM`` has it)."""

    def generate(self, images: Sequence[Any], prompts: Sequence[str], **kwargs: Any) -> list[list[str]]: ...

    def chat(self, image: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str: ...


@dataclass
class Job:
    image: Image.Image
    messages: list[dict[str, str]]
    params: GenParams
    future: asyncio.Future = field(repr=False)

    @property
    def single_turn(self) -> bool:
        return len(self.messages) == 1


@dataclass
class BatchStats:
    requests: int = 0
    batches: int = 0
    largest_batch: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "batches": self.batches,
            "largest_batch": self.largest_batch,
            "busy_s": round(self.busy_s, 3),
        }


class Batcher:
    """Queue + worker task; ``await batcher.submit(...)`` returns the answer text."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch: int = 8,
        wait_ms: float = 5.0,
        extra: dict[str, Any] | None = None,
        max_queue: int | None = None,
    ) -> None:
        """``extra``: generation settings added to every call (the server's repeat guard);
        ``max_queue``: most jobs waiting for the model (None: no bound)."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if max_queue is not None and max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.max_queue = max_queue
        self.backend, self.max_batch, self.wait_s = backend, max_batch, max(wait_ms, 0.0) / 1000
        self.extra = dict(extra or {})
        self.stats = BatchStats()
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._arriving = 0

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark a request that is being read and checked, so the worker waits for it to join a batch."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    def start(self) -> None:
        """Start the worker on the running event loop (the app's startup)."""
        self._queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfsynth-model")
        self._task = asyncio.get_running_loop().create_task(self._work(), name="selfsynth-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._queue is not None:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(RuntimeError("server shutting down"))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._task = self._pool = self._queue = None

    async def submit(self, image: Image.Image, messages: list[dict[str, str]], params: GenParams) -> str:
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.max_queue is not None and self._queue.qsize() >= self.max_queue:
            raise QueueFull(f"{self._queue.qsize()} requests are already waiting")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put(Job(image, messages, params, fut))
        return await fut  # a client that goes away cancels fut; the worker then skips the job

    async def _collect(self, first: Job) -> list[Job]:
        """``first`` plus whatever arrives within the batching window (or is queued already)."""
        assert self._queue is not None
        jobs = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(jobs) < self.max_batch:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0 or self._arriving == 0:
                break
            try:
                jobs.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return jobs

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            jobs = await self._collect(first) if first.single_turn else [first]
            for group in _groups(jobs):
                live = [j for j in group if not j.future.done()]
                if not live:
                    continue
                t0 = time.perf_counter()
                try:
                    answers = await loop.run_in_executor(self._pool, self._run, live)
                except Exception as e:  # one failed call fails its own requests, not the server
                    if len(live) == 1:
                        log.exception("model call failed for 1 request")
                        answers = [e]
                    else:
                        log.warning("a batch of %d failed (%s); retrying its rows one by one", len(live), e)
                        answers = [await self._alone(job) for job in live]
                self._count(len(live), time.perf_counter() - t0)
                for job, answer in zip(live, answers, strict=True):
                    if job.future.done():
                        continue
                    if isinstance(answer, BaseException):
                        job.future.set_exception(answer)
                    else:
                        job.future.set_result(answer)

    async def _alone(self, job: Job) -> str | BaseException:
        """One job in its own model call: its answer, or the exception it raised."""
        if job.future.done():
            return RuntimeError("the request went away")
        try:
            return (await asyncio.get_running_loop().run_in_executor(self._pool, self._run, [job]))[0]
        except Exception as e:
            log.exception("model call failed for 1 request")
            return e

    def _count(self, n: int, seconds: float) -> None:
        s = self.stats
        s.requests += n
        s.batches += 1
        s.largest_batch = max(s.largest_batch, n)
        s.busy_s += seconds
        log.debug("ran a batch of %d in %.3f s", n, seconds)

    def _run(self, jobs: list[Job]) -> list[str]:
        """On the model thread: one generate call for single-turn jobs, else one chat call."""
        params = {**jobs[0].params.kwargs(), **self.extra}
        if len(jobs) == 1 and not jobs[0].single_turn:
            return [self.backend.chat(jobs[0].image, jobs[0].messages, **params)]
        out = self.backend.generate(
            [j.image for j in jobs],
            [j.messages[0]["content"] for j in jobs],
            n=1,
            batch_size=self.max_batch,
            **params,
        )
        return [group[0] for group in out]


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Single-turn jobs grouped by sampling settings (one generate call each); multi-turn jobs alone."""
    same: dict[GenParams, list[Job]] = {}
    alone: list[list[Job]] = []
    for j in jobs:
        if j.single_turn:
            same.setdefault(j.params, []).append(j)
        else:
            alone.append([j])
    return [*same.values(), *alone]
