"""Benchmark the server's request batching: N requests one after another, then N at once.

Starts the real app under uvicorn on a free localhost port and sends chat completions (image +
question) with the official openai client: first sequentially, then from N threads at once. It
prints both throughputs, the ratio, and how many model calls the concurrent requests took
(fewer calls than requests = batching at work). Without ``--model`` it builds the tiny random
LLaVA the unit tests use (timings then measure the HTTP and batching overhead more than a model).

    .venv/bin/python bench/serve.py --requests 20
    .venv/bin/python bench/serve.py --model runs/NAME/round_4/finetune/merged --max-tokens 64
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

import argparse  # noqa: E402
import base64  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (default: a tiny random LLaVA built in a temp dir)")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()

    import openai
    import torch
    from PIL import Image

    from selfsynth.models.vlm import VLM
    from selfsynth.serve.protocol import Limits
    from selfsynth.serve.server import ServerThread, create_app

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model
    if model_dir is None:
        sys.path.insert(0, str(Path(HERE).parent / "tests" / "unit"))
        from tiny_models import build_llava

        model_dir = str(build_llava(Path(tmp.name) / "tiny-llava"))
    vlm = VLM.load(model_dir)
    url = data_url(Image.new("RGB", (64, 64), (180, 40, 40)))
    limits = Limits(max_new_tokens=max(args.max_tokens, 1))
    app = create_app(vlm, model_id="bench", limits=limits, max_batch=args.max_batch, wait_ms=args.wait_ms)

    with ServerThread(app) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)

        def one(i: int) -> str:
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": f"What is this? Explain why. ({i})"},
                    ],
                }
            ]
            r = client.chat.completions.create(model="bench", messages=messages, max_tokens=args.max_tokens)
            return r.choices[0].message.content

        one(-1)  # warm-up: first-call costs are not throughput
        busy0 = app.state.batcher.stats.busy_s
        t0 = time.perf_counter()
        for i in range(args.requests):
            one(i)
        t_seq = time.perf_counter() - t0
        busy_seq = app.state.batcher.stats.busy_s - busy0
        before, busy0 = app.state.batcher.stats.batches, app.state.batcher.stats.busy_s
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                one(i)
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.requests)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_conc = time.perf_counter() - t0
        stats = app.state.batcher.stats
    result = {
        "model": model_dir if args.model else "tiny random LLaVA",
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "torch_threads": args.threads,
        "sequential_s": round(t_seq, 3),
        "sequential_req_per_s": round(args.requests / t_seq, 2),
        "sequential_model_busy_s": round(busy_seq, 3),
        "concurrent_s": round(t_conc, 3),
        "concurrent_req_per_s": round(args.requests / t_conc, 2),
        "concurrent_model_busy_s": round(stats.busy_s - busy0, 3),
        "speedup": round(t_seq / t_conc, 2),
        "model_calls_for_concurrent": stats.batches - before,
        "largest_batch": stats.largest_batch,
        "errors": len(errors),
    }
    print(json.dumps(result, indent=2))
    tmp.cleanup()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
