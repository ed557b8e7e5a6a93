"""The batcher: concurrent single-turn requests share one generate call; chats and failures stay apart."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from PIL import Image

from selfsynth.serve.batcher import Batcher, QueueFull
from selfsynth.serve.protocol import GenParams


class Recorder:
    """A backend double that records each call and answers with the prompt upper-cased."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, object]] = []
        self.threads: set[str] = set()
        self.delay, self.fail_on = delay, fail_on

    def generate(self, images, prompts, **kw):
        self.threads.add(threading.current_thread().name)
        self.calls.append(("generate", (list(prompts), kw)))
        time.sleep(self.delay)
        if any(self.fail_on and self.fail_on in p for p in prompts):
            raise RuntimeError("boom")
        return [[p.upper()] for p in prompts]

    def chat(self, image, messages, **kw):
        self.calls.append(("chat", ([m["content"] for m in messages], kw)))
        return "chat:" + messages[-1]["content"]


IMG = Image.new("RGB", (8, 8))


def _turn(text):
    return [{"role": "user", "content": text}]


async def _with(batcher, coro):
    batcher.start()
    try:
        return await coro
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_generate_call():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, wait_ms=50)

    async def go():
        return await asyncio.gather(*(b.submit(IMG, _turn(f"q{i}"), GenParams()) for i in range(5)))

    answers = asyncio.run(_with(b, go()))
    assert answers == ["Q0", "Q1", "Q2", "Q3", "Q4"]
    assert [kind for kind, _ in rec.calls] == ["generate"]
    prompts, kw = rec.calls[0][1]
    assert prompts == ["q0", "q1", "q2", "q3", "q4"]
    assert kw["n"] == 1 and kw["max_new_tokens"] == 128 and kw["temperature"] == 0.0
    assert b.stats.as_dict()["largest_batch"] == 5 and b.stats.batches == 1
    assert all(name.startswith("selfsynth-model") for name in rec.threads)


def test_max_batch_and_settings_split_calls():
    rec = Recorder()
    b = Batcher(rec, max_batch=2, wait_ms=50)
    hot = GenParams(temperature=0.7, top_p=0.9, max_new_tokens=8, seed=3)

    async def go():
        jobs = [
            b.submit(IMG, _turn("a"), GenParams()),
            b.submit(IMG, _turn("b"), hot),
            b.submit(IMG, _turn("c"), GenParams()),
            b.submit(IMG, _turn("d"), GenParams()),
        ]
        return await asyncio.gather(*jobs)

    assert asyncio.run(_with(b, go())) == ["A", "B", "C", "D"]
    sizes = sorted(len(call[1][0]) for call in rec.calls)
    assert max(sizes) <= 2 and sum(sizes) == 4
    hot_call = next(call for call in rec.calls if call[1][0] == ["b"])
    assert hot_call[1][1]["temperature"] == 0.7 and hot_call[1][1]["seed"] == 3


def test_multi_turn_goes_through_chat_alone():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, wait_ms=20)
    convo = [
        {"role": "user", "content": "what?"},
        {"role": "assistant", "content": "a bird"},
        {"role": "user", "content": "why?"},
    ]

    async def go():
        return await asyncio.gather(b.submit(IMG, convo, GenParams()), b.submit(IMG, _turn("x"), GenParams()))

    assert asyncio.run(_with(b, go())) == ["chat:why?", "X"]
    assert sorted(kind for kind, _ in rec.calls) == ["chat", "generate"]
    assert next(args for kind, args in rec.calls if kind == "chat")[0] == ["what?", "a bird", "why?"]


def test_a_failed_call_fails_its_requests_and_the_worker_goes_on():
    rec = Recorder(fail_on="bad")
    b = Batcher(rec, max_batch=8, wait_ms=0)

    async def go():
        with pytest.raises(RuntimeError, match="boom"):
            await b.submit(IMG, _turn("bad"), GenParams())
        return await b.submit(IMG, _turn("good"), GenParams())

    assert asyncio.run(_with(b, go())) == "GOOD"


def test_cancelled_requests_are_skipped():
    rec = Recorder(delay=0.2)
    b = Batcher(rec, max_batch=1, wait_ms=0)

    async def go():
        first = asyncio.create_task(b.submit(IMG, _turn("slow"), GenParams()))
        await asyncio.sleep(0.05)  # "slow" is now running on the model thread
        gone = asyncio.create_task(b.submit(IMG, _turn("gone"), GenParams()))
        await asyncio.sleep(0.01)
        gone.cancel()
        return await first

    assert asyncio.run(_with(b, go())) == "SLOW"
    assert [args[0] for _, args in rec.calls] == [["slow"]]


def test_submit_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(Batcher(Recorder()).submit(IMG, _turn("x"), GenParams()))
    with pytest.raises(ValueError):
        Batcher(Recorder(), max_batch=0)


def test_the_window_is_waited_only_for_requests_on_their_way():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, wait_ms=2000)

    async def lone():
        t0 = time.perf_counter()
        await b.submit(IMG, _turn("alone"), GenParams())
        return time.perf_counter() - t0

    assert asyncio.run(_with(b, lone())) < 1.0  # nobody else arriving: no 2 s wait

    b = Batcher(rec, max_batch=8, wait_ms=2000)

    async def late():
        async def second():
            with b.arriving():  # being read and checked...
                await asyncio.sleep(0.1)
            return await b.submit(IMG, _turn("late"), GenParams())

        return await asyncio.gather(b.submit(IMG, _turn("early"), GenParams()), second())

    rec.calls.clear()
    assert asyncio.run(_with(b, late())) == ["EARLY", "LATE"]
    assert [args[0] for _, args in rec.calls] == [["early", "late"]]  # waited for it: one call


def test_server_wide_settings_reach_every_call():
    rec = Recorder()
    guard = {"no_repeat_ngram": 3, "allow_repeats": ["Tern"]}
    b = Batcher(rec, max_batch=8, wait_ms=20, extra=guard)

    async def go():
        one = b.submit(IMG, _turn("q"), GenParams())
        two = b.submit(IMG, [*_turn("a"), {"role": "assistant", "content": "b"}, *_turn("c")], GenParams())
        return await asyncio.gather(one, two)

    asyncio.run(_with(b, go()))
    kinds = sorted(kind for kind, _ in rec.calls)
    assert kinds == ["chat", "generate"]
    for _, (_, kw) in rec.calls:
        assert kw["no_repeat_ngram"] == 3 and kw["allow_repeats"] == ["Tern"]


def test_a_failed_batch_is_retried_row_by_row_so_only_the_culprit_fails():
    rec = Recorder(fail_on="bad")
    b = Batcher(rec, max_batch=8, wait_ms=50)

    async def go():
        jobs = [b.submit(IMG, _turn(q), GenParams()) for q in ("a", "bad", "c")]
        return await asyncio.gather(*jobs, return_exceptions=True)

    a, bad, c = asyncio.run(_with(b, go()))
    assert (a, c) == ("A", "C") and isinstance(bad, RuntimeError)
    assert [args[0] for _, args in rec.calls] == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


def test_a_full_queue_refuses_at_once():
    rec = Recorder(delay=0.2)
    b = Batcher(rec, max_batch=1, wait_ms=0, max_queue=2)

    async def go():
        running = asyncio.create_task(b.submit(IMG, _turn("run"), GenParams()))
        await asyncio.sleep(0.05)  # taken by the worker: the queue is empty again
        waiting = [asyncio.create_task(b.submit(IMG, _turn(f"w{i}"), GenParams())) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit(IMG, _turn("one too many"), GenParams())
        return await asyncio.gather(running, *waiting)

    assert asyncio.run(_with(b, go())) == ["RUN", "W0", "W1"]
    with pytest.raises(ValueError):
        Batcher(rec, max_queue=0)
