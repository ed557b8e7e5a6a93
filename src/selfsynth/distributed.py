"""Data parallelism across processes and machines: which rank this is, barriers, and who writes what.

``accelerate launch`` and ``torchrun`` both describe the job in the environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``...). Generation stages split their pending chunks across ranks
(chunk c goes to rank c mod world size) and every rank writes only its own part files; after a
barrier the main rank writes the stage's outputs and manifest, and the other ranks read them back
through the stage's ordinary "already done" path. Stages with nothing to split (concepts, Z*
selection, report) run on the main rank while the others wait. The run directory must be one
folder that every rank sees (a shared filesystem across machines).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
# Ranks wait at barriers while the main rank merges a 7B model or queries an expert API.
BARRIER_TIMEOUT = timedelta(hours=6)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def cache_suffix() -> str:
    """A sub-folder for this rank's SQLite caches: SQLite's journal is not safe across machines."""
    return "" if rank() == 0 else f"rank{rank()}"


def init(device: str = "auto") -> None:
    """Join the process group the launcher described (gloo on CPU, NCCL on GPUs); no-op for one process."""
    if world_size() <= 1:
        return
    import torch
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu, timeout=BARRIER_TIMEOUT)
    log.info(
        "rank %d of %d (%s, backend %s)",
        state.process_index,
        state.num_processes,
        state.device,
        state.backend,
    )


def barrier() -> None:
    if world_size() <= 1:
        return
    import torch.distributed as td

    if not td.is_initialized():
        raise RuntimeError("distributed.barrier() before distributed.init(): call init() when the run starts")
    td.barrier()


def from_main(value: T) -> T:
    """The main rank's ``value`` on every rank (picklable; ``value`` itself for one process)."""
    if world_size() <= 1:
        return value
    import torch.distributed as td

    shared = [value]
    td.broadcast_object_list(shared, src=0)
    return shared[0]


def my_chunks(n: int) -> list[int]:
    """The chunk indices of ``n`` that this rank computes."""
    return [c for c in range(n) if c % world_size() == rank()]


_collective = False


@contextmanager
def collective() -> Iterator[None]:
    """Mark the stage run inside as shared by every rank (``runs.Stage`` then splits its chunks)."""
    global _collective
    before, _collective = _collective, True
    try:
        yield
    finally:
        _collective = before


def in_collective() -> bool:
    return _collective and world_size() > 1


class ShardDone(Exception):
    """Raised on a non-main rank once its chunks are written, so it can wait for the main rank."""


def main_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` on the main rank, then on the others, which find its work done and load it."""
    if world_size() <= 1:
        return fn(*args, **kwargs)
    if is_main():
        out = fn(*args, **kwargs)
        barrier()
        return out
    barrier()
    return fn(*args, **kwargs)


def sharded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a stage whose chunks every rank shares; the main rank finishes it, the others then load it.

    A non-main rank leaves ``fn`` by ``ShardDone`` after its chunks (``runs.Stage.chunks``), waits
    until the main rank has written the stage, and calls ``fn`` again to read the finished result.
    """
    if world_size() <= 1:
        return fn(*args, **kwargs)
    if is_main():
        with collective():
            out = fn(*args, **kwargs)
        barrier()
        return out
    try:
        # Returning normally means the stage was already finished: nothing computed, nothing to wait for.
        with collective():
            out = fn(*args, **kwargs)
    except ShardDone:
        barrier()
        return fn(*args, **kwargs)
    barrier()
    return out


def together(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a stage that every rank takes part in as a whole (DDP fine-tuning), then wait for all ranks.

    The barrier lets the main rank finish what only it writes (the merge, the manifest) first.
    """
    with collective():
        out = fn(*args, **kwargs)
    barrier()
    return out
