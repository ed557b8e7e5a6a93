"""Build chat prompts with the processor's own template and encode (image, prompt[, answer]) batches.

The backend never hard-codes a prompt format: the model directory's chat template decides how a
user turn with one image looks (``USER: <image>\\n...``, ChatML, Idefics' ``User:<image>``...),
so any image-text-to-text checkpoint works. Training targets are cut from the same template (the
text between the generation prompt and the end-of-turn token), so the model learns to produce
exactly what generation later reads back, ending with its EOS token.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from selfsynth.errors import DataError, SelfsynthError
from selfsynth.models import pixel_memo
from selfsynth.models.devices import round_up

log = logging.getLogger(__name__)

ImageLike = str | Path | Image.Image
IGNORE = -100


def build_messages(question: str, image: bool = True) -> list[dict[str, Any]]:
    """One user turn: the image (if any) then the text, in the content-list form processors expect."""
    content: list[dict[str, Any]] = [{"type": "image"}] if image else []
    content.append({"type": "text", "text": question})
    return [{"role": "user", "content": content}]


def normalize_messages(messages: list[dict[str, Any]], image: bool = True) -> list[dict[str, Any]]:
    """Turn ``{"role", "content": str}`` turns into content lists; put the image in the first user turn."""
    out, placed = [], not image
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"message {i} must be a mapping with 'role' and 'content', got {m!r}")
        content = m["content"]
        parts = (
            [{"type": "text", "text": content}] if isinstance(content, str) else [dict(c) for c in content]
        )
        has_image = any(c.get("type") == "image" for c in parts)
        if m["role"] == "user" and not placed and not has_image:
            parts.insert(0, {"type": "image"})
        placed = placed or m["role"] == "user" or has_image
        out.append({"role": m["role"], "content": parts})
    return out


def render(processor: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
    """The prompt string the chat template makes of ``messages``."""
    if not getattr(processor, "chat_template", None) and not getattr(
        processor.tokenizer, "chat_template", None
    ):
        raise SelfsynthError(
            "the model's processor has no chat template; add chat_template.jinja to the "
            "model directory (the template the model was trained with)"
        )
    return processor.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def answer_suffix(
    processor: Any, messages: list[dict[str, Any]], prompt: str, answer: str, ends: Sequence[str] = ()
) -> str:
    """What the assistant turn adds after ``prompt`` for ``answer``, cut after its first end token.

    ``ends``: the tokens generation stops at (default: the tokenizer's EOS). They can differ from
    the tokenizer's EOS: Gemma 3 ends a turn with ``<end_of_turn>`` and its tokenizer's EOS is
    ``<eos>``, so the target must stop where generation will. Falls back to ``answer + eos``
    when the template renders the assistant turn in a way that does not extend the prompt.
    """
    eos = processor.tokenizer.eos_token or ""
    ends = [e for e in ends if e] or ([eos] if eos else [])
    full = render(
        processor,
        messages + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
        add_generation_prompt=False,
    )
    suffix = full[len(prompt) :] if full.startswith(prompt) and answer in full[len(prompt) :] else answer
    after = suffix.find(answer) + len(answer)
    found = [(suffix.find(e, after), e) for e in ends if e in suffix[after:]]
    if found:
        at, end = min(found)
        return suffix[: at + len(end)]
    return suffix.rstrip() + (eos or (ends[0] if ends else ""))


def open_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image; a missing or unreadable file is a DataError naming it and the fix."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    from selfsynth.data.checks import decode_image

    return decode_image(image)


def image_key(image: ImageLike) -> str:
    """A stable identity for seeding: a hash of the file's bytes (or of an in-memory image's pixels).

    Content, not path: the same dataset copied elsewhere gives the same samples.
    """
    if isinstance(image, Image.Image):
        return (
            "pil:" + hashlib.blake2b(image.tobytes() + repr(image.size).encode(), digest_size=16).hexdigest()
        )
    path = Path(image)
    try:
        return "file:" + hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except FileNotFoundError:
        raise DataError(
            "image file not found; check the dataset root and the record's image path", file=str(path)
        ) from None
    except OSError as e:
        raise DataError(f"cannot read the image ({e})", file=str(path)) from None


def _text_kwargs(processor: Any, texts: list[str]) -> dict[str, Any]:
    bos = processor.tokenizer.bos_token
    return {"add_special_tokens": False} if bos and texts and all(t.startswith(bos) for t in texts) else {}


def _pad(rows: list[torch.Tensor], value: int, side: str, multiple: int = 1) -> torch.Tensor:
    width = round_up(max(len(r) for r in rows), multiple)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        if side == "left":
            out[i, width - len(r) :] = r
        else:
            out[i, : len(r)] = r
    return out


def encode(
    processor: Any,
    images: list[Image.Image],
    prompts: list[str],
    answers: list[str] | None = None,
    *,
    side: str = "left",
    max_length: int | None = None,
    pad_multiple: int = 1,
) -> dict[str, torch.Tensor]:
    """Tokenize one image + prompt per row (image tokens expanded by the processor), padded on ``side``.

    With ``answers`` (already cut by ``answer_suffix``), each row is prompt + answer and ``labels``
    is the answer's ids with every prompt, image and pad position set to -100. ``max_length``
    truncates the answer (never the prompt: cutting image tokens would break the forward pass).
    ``pad_multiple`` rounds the padded length up (see ``devices.PAD_MULTIPLE_BF16``).
    """
    texts = prompts if answers is None else [p + a for p, a in zip(prompts, answers, strict=True)]
    kw = _text_kwargs(processor, texts)
    with pixel_memo.use(processor):
        enc = processor(images=[[im] for im in images], text=texts, padding=True, return_tensors="pt", **kw)
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    seq_keys = [
        k for k, v in enc.items() if torch.is_tensor(v) and v.shape == ids.shape and k != "attention_mask"
    ]
    rows = {k: [enc[k][i][mask[i]] for i in range(len(texts))] for k in seq_keys}
    out: dict[str, torch.Tensor] = {
        k: v for k, v in enc.items() if k not in seq_keys and k != "attention_mask"
    }
    if answers is not None:
        tok = processor.tokenizer
        labels = []
        for i, (p, full) in enumerate(zip(prompts, texts, strict=True)):
            p_raw = tok(p, **kw)["input_ids"]
            full_raw = tok(full, **kw)["input_ids"]
            start = len(p_raw)
            if full_raw[:start] != p_raw:  # the boundary merged: supervise from the first differing token
                start = next(j for j, (a, b) in enumerate(zip(full_raw, p_raw, strict=False)) if a != b)
            start += len(rows["input_ids"][i]) - len(full_raw)  # image-token expansion sits in the prompt
            row = rows["input_ids"][i].clone()
            row[:start] = IGNORE
            labels.append(row)
        if max_length:
            for i, lab in enumerate(labels):
                keep = max(max_length, int((lab == IGNORE).sum()))
                if keep > max_length:
                    log.warning(
                        "row %d: the prompt alone (%d tokens) exceeds max_length=%d; its answer is dropped",
                        i,
                        keep,
                        max_length,
                    )
                labels[i] = lab[:keep]
                for k in seq_keys:
                    rows[k][i] = rows[k][i][:keep]
        out["labels"] = _pad(labels, IGNORE, side, pad_multiple)
    pad_id = processor.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (processor.tokenizer.eos_token_id or 0)
    for k in seq_keys:
        out[k] = _pad(rows[k], pad_id if k == "input_ids" else 0, side, pad_multiple)
    out["attention_mask"] = _pad(
        [torch.ones(len(r), dtype=torch.long) for r in rows["input_ids"]], 0, side, pad_multiple
    )
    return out


class PromptCache:
    """Rendered one-image chat prompts by question; the least recently used go past ``size``.

    Bounded because a server sees a new question with every request.
    """

    def __init__(self, processor: Any, size: int = 4096) -> None:
        self.processor, self.size = processor, size
        self._items: OrderedDict[str, str] = OrderedDict()

    def __call__(self, question: str) -> str:
        if question in self._items:
            self._items.move_to_end(question)
            return self._items[question]
        rendered = self._items[question] = render(self.processor, build_messages(question))
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return rendered

    def __len__(self) -> int:
        return len(self._items)
