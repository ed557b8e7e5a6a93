"""Training batches assembled from per-example encodings, so an example is tokenised once per run.

A LoRA step used to rebuild its batch from scratch: decode 32 image files, run the processor over
text and images, and tokenise every prompt twice more to find where the answer starts. On the
embedded world's decoder that was over a quarter of each step, repeated for every epoch. Here each
example's token rows (ids, labels, any other per-token tensors) are made once with ``batch_for``
and kept; a micro-batch pads them together and takes its image tensors from one call of the image
processor (through the pixel memo) on decoded images that are also kept.

That split holds for processors whose image tensors come from the image processor alone and whose
text does not depend on the other rows (LLaVA, LLaVA-OneVision, Qwen2-VL and Qwen2.5-VL, the
embedded model). The first micro-batch is built both ways and compared exactly; any difference
(Gemma 3, InternVL and Idefics3 add or pad tensors the image processor does not make) turns the
cache off for the run, which then builds every batch as before.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from selfsynth.models import pixel_memo
from selfsynth.models.chat import IGNORE, open_image
from selfsynth.models.devices import round_up

log = logging.getLogger(__name__)

FILL_ROWS = 256  # examples tokenised per processor call while the rows are being made


class RowCache:
    """Token rows per example and decoded images per file, for the batches of one training run.

    ``batch(idx, pad_multiple)`` returns what ``batch_for`` would for those examples, right-padded.
    """

    def __init__(self, vlm: Any, examples: Sequence[Any], max_length: int | None) -> None:
        self.vlm, self.examples, self.max_length = vlm, examples, max_length
        self._rows: dict[int, dict[str, torch.Tensor]] = {}
        self._images: dict[str, Image.Image] = {}
        self.enabled: bool | None = None  # decided by the first batch (``check``)

    def image(self, i: int) -> Image.Image:
        src = self.examples[i].image
        if isinstance(src, Image.Image):
            return open_image(src)
        key = str(src)
        if key not in self._images:
            self._images[key] = open_image(src)
        return self._images[key]

    def batch(self, idx: Sequence[int], pad_multiple: int = 1) -> dict[str, torch.Tensor]:
        if self.enabled is None:
            return self._check(idx, pad_multiple)
        if not self.enabled:
            return self._direct(idx, pad_multiple)
        return self._assemble(idx, pad_multiple)

    def _direct(self, idx: Sequence[int], pad_multiple: int) -> dict[str, torch.Tensor]:
        from selfsynth.models.sft import batch_for

        return batch_for(
            self.vlm,
            [self.image(i) for i in idx],
            [self.examples[i].question for i in idx],
            [self.examples[i].answer for i in idx],
            max_length=self.max_length,
            pad_multiple=pad_multiple,
        )

    def _check(self, idx: Sequence[int], pad_multiple: int) -> dict[str, torch.Tensor]:
        direct = self._direct(idx, pad_multiple)
        try:
            self._fill(idx, one_by_one=True)  # rows made alone: they must not depend on the batch
            assembled = self._assemble(idx, pad_multiple)
            same = assembled.keys() == direct.keys() and all(
                not torch.is_tensor(v) or (v.shape == assembled[k].shape and torch.equal(v, assembled[k]))
                for k, v in direct.items()
            )
        except Exception as e:  # any processor this split does not fit: build batches whole
            log.debug("per-example rows unusable: %s", e)
            same = False
        self.enabled = same
        if not same:
            self._rows.clear()
            log.info(
                "training batches: per-example rows differ from whole batches for this processor; not cached"
            )
        return direct

    def _fill(self, idx: Sequence[int], one_by_one: bool = False) -> None:
        """Token rows of the examples not yet kept, from one right-padded batch (or one call each)."""
        missing = list(dict.fromkeys(i for i in idx if i not in self._rows))
        if one_by_one:
            groups = [[i] for i in missing]
        else:  # and the rest of the run's examples with them: one processor call per FILL_ROWS
            asked = set(missing)
            rest = [i for i in range(len(self.examples)) if i not in self._rows and i not in asked]
            todo = missing + rest[: max(0, FILL_ROWS - len(missing))]
            groups = [todo] if todo else []
        for group in groups:
            enc = self._direct(group, 1)  # its pixels stay in the pixel memo for ``_assemble``
            shape = enc["input_ids"].shape
            lengths = enc["attention_mask"].sum(dim=1).tolist()
            for j, i in enumerate(group):
                self._rows[i] = {
                    k: v[j, : lengths[j]].clone()
                    for k, v in enc.items()
                    if torch.is_tensor(v) and v.shape == shape
                }

    def _assemble(self, idx: Sequence[int], pad_multiple: int) -> dict[str, torch.Tensor]:
        self._fill(idx)
        rows = [self._rows[i] for i in idx]
        width = round_up(max(len(r["input_ids"]) for r in rows), pad_multiple)
        tok = self.vlm.processor.tokenizer
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        fill = {"input_ids": pad_id, "labels": IGNORE}
        out: dict[str, torch.Tensor] = {}
        for key in rows[0]:
            t = torch.full((len(rows), width), fill.get(key, 0), dtype=rows[0][key].dtype)
            for j, r in enumerate(rows):
                t[j, : len(r[key])] = r[key]
            out[key] = t
        processor = self.vlm.processor
        with pixel_memo.use(processor):
            images = processor.image_processor(images=[self.image(i) for i in idx], return_tensors="pt")
        for key, value in images.items():
            out[key] = value
        return out
