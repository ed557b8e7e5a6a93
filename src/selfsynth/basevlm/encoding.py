"""The base build's image encoding: every pretraining image once through the frozen tower.

``BackgroundEncoder`` does it in a second process while the build's first, text-only drill steps
run in this one. On a 2-core CPU both are small-step work that two threads speed up by only
1.2-1.5x, so two one-thread workers finish sooner than one two-thread worker doing one after the
other, and (measured on the 2-core build machine) every weight of the built model is the same
either way (docs/notes/performance.md).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def encode_features(
    model: Any, processor: Any, records: Any, path: Path, bf16: bool, progress: bool = True
) -> Any:
    """Every pretraining image through the frozen tower, kept in ``path`` (written atomically)."""
    import torch

    from selfsynth.basevlm import corpus as base_data
    from selfsynth.basevlm.pretrain import encode_images

    # half precision halves the largest buffer of the build; training casts batches back
    feats = encode_images(
        model,
        processor,
        base_data.LazyImages([r.image for r in records]),
        dtype=torch.float16,
        bf16=bf16,
        progress=progress,
    )
    # a per-process name: an orphaned encoder of a killed build may still be writing its own
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(feats, tmp)
    os.replace(tmp, path)
    return feats


def _encode_in_worker(work: str, settings: dict[str, Any], threads: int, bf16: bool) -> None:
    """The background encoder's process: the same tower and processor as the build's, on ``threads``."""
    import torch
    from transformers import AutoTokenizer

    from selfsynth.basevlm import corpus as base_data
    from selfsynth.basevlm.build import BaseSettings, build_architecture, build_processor

    torch.set_num_threads(threads)
    s = BaseSettings(**settings)
    tokenizer = AutoTokenizer.from_pretrained(Path(work) / "tokenizer")
    model = build_architecture(tokenizer, s)
    processor = build_processor(tokenizer, s.tower_size, model.config.vision_config.patch_size)
    records = base_data.load_records(Path(work) / "world")
    # the build's own progress bar (the drills) is the one on screen
    encode_features(model, processor, records, Path(work) / "features.pt", bf16, progress=False)


class BackgroundEncoder:
    """Encodes the pretraining images in a second process while the build goes on with the text drills."""

    def __init__(self, work: Path, s: Any, threads: int, bf16: bool) -> None:
        import multiprocessing as mp

        self.path = work / "features.pt"
        self.started = time.time()
        # spawn, not fork: the parent's OpenMP thread pool does not survive a fork
        self.proc = mp.get_context("spawn").Process(
            target=_encode_in_worker,
            args=(str(work), dataclasses.asdict(s), threads, bf16),
            name="selfsynth-encode",
            daemon=True,
        )
        self.proc.start()
        logger.info("encoding the pretraining images in a second process (%d thread(s))", threads)

    def result(self, threads: int, timings: dict[str, float]) -> Any:
        """A callable for ``pretrain``: waits for the features, then gives this process ``threads`` again."""

        def wait() -> Any:
            import torch

            t = time.time()
            self.proc.join()
            if self.proc.exitcode != 0 or not self.path.is_file():
                raise RuntimeError(
                    f"encoding the pretraining images failed in its own process (exit code "
                    f"{self.proc.exitcode}; its error is printed above); run the build again to "
                    "resume, or with --encode-first to encode in the main process"
                )
            # the encoder's own time (its file is written last), beside the drills
            timings["features_s"] = round(self.path.stat().st_mtime - self.started, 1)
            timings["features_wait_s"] = round(time.time() - t, 1)
            torch.set_num_threads(threads)
            return torch.load(self.path, weights_only=True)

        return wait

    def stop(self) -> None:
        """End the encoder if the build stops first (an error or an interrupt)."""
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join()
