"""Benchmark generation through vLLM (``model.engine=vllm``) against the HF backend on the same model.

Both engines get the same (image, prompt) pairs, the same n, temperature and max_new_tokens; the
script prints each engine's start-up time, the wall time of the timed call (after one warm-up
call; the fastest of ``--repeats``), the generated tokens per second and the ratio. Tokens are
counted by re-tokenizing the answers with the model's tokenizer, the same way for both. Run it
in the environment that ``make test-vllm`` builds; without vllm it says so and exits 0.

    .venv-vllm/bin/python bench/engines.py                    # a random tiny LLaVA (16 image tokens)
    .venv-vllm/bin/python bench/engines.py --image-size 96    # 144 image tokens per prompt
    .venv-vllm/bin/python bench/engines.py --model DIR        # any local LLaVA-style model
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(os.path.dirname(_HERE), "tests", d) for d in ("unit", "vllm")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

QUESTIONS = ["describe the image .", "what is the name of this bird ?", "explain why .", "what is this ?"]


def timed(backend, images, prompts, args) -> tuple[float, int]:
    """Wall seconds of one ``generate`` call and the tokens it produced."""
    kw = dict(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=0)
    backend.generate(images[:2], prompts[:2], **kw)  # warm-up: first-call allocations and kernels
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = backend.generate(images, prompts, batch_size=args.batch_size, **kw)
        walls.append(time.perf_counter() - t0)
    wall = min(walls)  # the least disturbed run: the CPU may be shared with other work
    tok = backend.processor.tokenizer
    tokens = sum(len(tok(s, add_special_tokens=False)["input_ids"]) + 1 for group in out for s in group)
    return wall, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: a random tiny LLaVA built in a temp dir)")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=32, help="tiny model's image side (8 px patches)")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16, help="HF batch size (vLLM schedules its own)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per engine; the fastest counts")
    args = ap.parse_args()
    if importlib.util.find_spec("vllm") is None:
        print("vllm is not installed in this environment; run `make test-vllm` and use .venv-vllm/bin/python")
        return 0

    from tiny_llava import build_hub_llava
    from tiny_models import make_images

    from selfsynth.config import ModelConfig
    from selfsynth.models.vllm_engine import VLLMBackend
    from selfsynth.models.vlm import VLM

    with tempfile.TemporaryDirectory() as tmp:
        model = (
            Path(args.model)
            if args.model
            else build_hub_llava(Path(tmp) / "llava", image_size=args.image_size)
        )
        paths = make_images(Path(tmp) / "images", args.images)
        images = [p for p in paths for _ in QUESTIONS][: args.images]
        prompts = (QUESTIONS * len(paths))[: args.images]

        t0 = time.perf_counter()
        hf = VLM.load(model, feature_cache=False)
        hf_start = time.perf_counter() - t0
        hf_wall, hf_tokens = timed(hf, images, prompts, args)
        del hf

        t0 = time.perf_counter()
        v = VLLMBackend(model, ModelConfig(path=str(model), engine="vllm", enforce_eager=True))
        v.engine()
        v_start = time.perf_counter() - t0
        v_wall, v_tokens = timed(v, images, prompts, args)
        v.close()

    print(
        f"{args.images} (image, prompt) pairs x n={args.n}, temperature {args.temperature}, "
        f"max_new_tokens {args.max_new_tokens}, {os.cpu_count()} CPUs, best of {args.repeats}"
    )
    for name, start, wall, tokens in (
        ("hf", hf_start, hf_wall, hf_tokens),
        ("vllm", v_start, v_wall, v_tokens),
    ):
        print(
            f"{name:5s} start {start:6.1f} s   generate {wall:6.2f} s   {tokens:6d} tokens   {tokens / wall:8.1f} tok/s"
        )
    print(f"vllm / hf throughput: {(v_tokens / v_wall) / (hf_tokens / hf_wall):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
