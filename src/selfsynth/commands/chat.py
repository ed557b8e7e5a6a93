"""``selfsynth chat MODEL_DIR --image PATH``: ask a model about an image in the terminal.

It answers the question (default "What is this? Explain why."), marks the cited concepts, then
keeps the conversation going with follow-up questions read from stdin until end of input; the
image stays in the first turn. ``--json`` answers once with one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEFAULT_QUESTION = "What is this? Explain why."
_MARK, _LABEL, _RESET = "\033[1;33m", "\033[1;32m", "\033[0m"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="ask a model about an image (follow-ups from stdin)")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="local model directory (a merged model)")
    p.add_argument("--image", required=True, help="the image to ask about")
    p.add_argument(
        "--question", default=DEFAULT_QUESTION, help=f"first question (default: {DEFAULT_QUESTION!r})"
    )
    p.add_argument("--json", action="store_true", help='answer once as {"answer", "evidence", "model"}')
    p.add_argument(
        "--concepts",
        metavar="FILE",
        help="concept bank JSON to mark cited evidence (default: found next to the model or its run)",
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-repeat-ngram",
        type=int,
        default=0,
        metavar="N",
        help="never repeat a run of N generated tokens (class names excepted; 3 suits the world's models)",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def read_image(path: str):
    """The image as RGB, or a SelfsynthError that names it (checked before the model loads)."""
    from selfsynth.data.checks import decode_image
    from selfsynth.errors import SelfsynthError

    p = Path(path)
    if not p.is_file():
        raise SelfsynthError(f"{path}: image not found; check the path")
    return decode_image(p, fix="pass a PNG or JPEG file")


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _show(answer: str, finder, color: bool) -> None:
    ev = finder(answer)
    if color and ev.cited:
        print(
            "".join(
                t if c is None else (_LABEL if ev.kinds[c] == "label" else _MARK) + t + _RESET
                for t, c in ev.segments
            )
        )
    else:
        print(answer)
    if finder:
        print("evidence: " + ("; ".join(ev.cited) if ev.cited else "(no known concept cited)"))
    sys.stdout.flush()


def run(args: argparse.Namespace, vlm=None) -> int:
    """``vlm`` lets tests inject a model double; image and settings are checked before any model loads."""
    from selfsynth.errors import ConfigError
    from selfsynth.serve.evidence import EvidenceFinder, locate_concepts

    if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1 or args.no_repeat_ngram < 0:
        raise ConfigError(
            "--max-new-tokens must be >= 1, --temperature >= 0, --top-p in (0, 1] and --no-repeat-ngram >= 0"
        )
    image = read_image(args.image)
    if not args.question.strip():
        raise ConfigError("--question is empty; ask something or leave it out for the default")
    bank, _ = locate_concepts(args.model_dir, args.concepts)
    finder = EvidenceFinder(bank)
    if vlm is None:
        from selfsynth.models.vlm import VLM

        vlm = VLM.load(args.model_dir, dtype=args.dtype, device=args.device)
    gen = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
    }
    if args.no_repeat_ngram > 1:  # off by default: a plain call leaves the model's text as it is
        gen.update(no_repeat_ngram=args.no_repeat_ngram, allow_repeats=list(bank))
    messages = [{"role": "user", "content": args.question}]
    answer = vlm.chat(image, messages, **gen)
    if args.json:
        print(
            json.dumps(
                {"answer": answer, "evidence": finder(answer).cited, "model": str(args.model_dir)},
                ensure_ascii=False,
            )
        )
        return 0
    color = _color()
    interactive = sys.stdin.isatty()
    _show(answer, finder, color)
    messages.append({"role": "assistant", "content": answer})
    while True:
        if interactive:
            print("> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        question = line.strip()
        if not question:
            continue
        messages.append({"role": "user", "content": question})
        answer = vlm.chat(image, messages, **gen)
        messages.append({"role": "assistant", "content": answer})
        _show(answer, finder, color)
    if interactive:
        print()
    return 0
