"""``selfsynth serve MODEL_DIR``: an OpenAI-compatible HTTP server and a web page for a tuned model.

``POST /v1/chat/completions`` (what every OpenAI client speaks; images as data URLs),
``GET /v1/models``, ``GET /health``, and the page at ``/``. Concurrent requests are batched into
one model call. It binds to 127.0.0.1 unless ``--host`` says otherwise; exposing it is a
deliberate choice, best made with an API key (``--api-key`` or the SELFSYNTH_API_KEY environment
variable) and ``--allowed-hosts``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

_GENERIC_NAMES = {"merged", "model", "base", "final", "checkpoint"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible server and web page for a model")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="local model directory (a merged model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' on /v1/ requests (default: the SELFSYNTH_API_KEY "
        "environment variable, which keeps the key out of the process list; unset: no key). "
        "The web page asks for the key once and keeps it for the browser tab",
    )
    p.add_argument(
        "--allowed-hosts",
        default="",
        metavar="NAMES",
        help="comma-separated Host names to answer besides the bound one ('*': any); other Host "
        "headers get 421, which stops DNS rebinding (default: the bound address, plus localhost "
        "names when it is loopback; any name when bound to 0.0.0.0 or ::)",
    )
    p.add_argument(
        "--concepts",
        metavar="FILE",
        help="concept bank JSON to mark cited evidence (default: found next to the model or its run)",
    )
    p.add_argument("--model-name", help="the model id clients send (default: from MODEL_DIR)")
    p.add_argument("--max-batch", type=int, default=8, help="most requests answered by one model call")
    p.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long to wait for more requests to batch"
    )
    p.add_argument("--max-body-mb", type=float, default=10.0, help="largest request body")
    p.add_argument("--max-image-px", type=int, default=4096, help="longest image side accepted")
    p.add_argument("--max-new-tokens", type=int, default=256, help="largest max_tokens a request may ask for")
    p.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=2048,
        help="longest conversation text, in the model's tokens (image tokens not counted); longer gets 400",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="longest a request waits for its answer; then 504 and its queued work is dropped",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="most requests waiting for the model; more get 503 with Retry-After",
    )
    p.add_argument(
        "--no-repeat-ngram",
        type=int,
        default=0,
        metavar="N",
        help="answers never repeat a run of N generated tokens (class names of the concept bank excepted)",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def model_name(model_dir: str | Path) -> str:
    """A readable id: the folder name, or ``RUN-round_R`` for a run's ``round_R/finetune/merged``."""
    p = Path(model_dir).resolve()
    if p.name not in _GENERIC_NAMES:
        return p.name
    parts = [q.name for q in p.parents][:3]
    for i, name in enumerate(parts):
        if re.fullmatch(r"round_\d+", name) and i + 1 < len(parts):
            return f"{parts[i + 1]}-{name}"
    return "-".join(reversed([p.name, *parts[:1]]))


def run(args: argparse.Namespace, backend=None) -> int:
    """``backend`` lets tests inject a model double; flags are checked before any model loads."""
    from selfsynth.errors import ConfigError
    from selfsynth.serve.evidence import locate_concepts
    from selfsynth.serve.guard import API_KEY_ENV, allowed_hosts, is_loopback
    from selfsynth.serve.protocol import Limits

    if args.max_batch < 1 or args.max_new_tokens < 1 or args.max_image_px < 1 or args.max_body_mb <= 0:
        raise ConfigError("--max-batch, --max-new-tokens, --max-image-px and --max-body-mb must be positive")
    if args.max_prompt_tokens < 1 or args.request_timeout <= 0 or args.max_queue < 1:
        raise ConfigError("--max-prompt-tokens, --request-timeout and --max-queue must be positive")
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if args.no_repeat_ngram < 0:
        raise ConfigError("--no-repeat-ngram must be >= 0 (0 = off)")
    if not 0 <= args.port < 65536:
        raise ConfigError(f"--port {args.port}: must be between 0 and 65535")
    bank, source = locate_concepts(args.model_dir, args.concepts)
    if source:
        log.info("evidence from %s (%d classes)", source, len(bank))
    else:
        log.info("no concept bank found; pass --concepts FILE to mark cited evidence")
    if backend is None:
        from selfsynth.models.vlm import VLM

        backend = VLM.load(args.model_dir, dtype=args.dtype, device=args.device)
    import uvicorn

    from selfsynth.serve.server import create_app

    limits = Limits(
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        max_image_px=args.max_image_px,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
    )
    name = args.model_name or model_name(args.model_dir)
    app = create_app(
        backend,
        model_id=name,
        concepts=bank,
        limits=limits,
        max_batch=args.max_batch,
        wait_ms=args.batch_wait_ms,
        no_repeat_ngram=args.no_repeat_ngram,
        api_key=api_key,
        allowed_hosts=allowed_hosts(args.host, args.allowed_hosts.split(",")),
        request_timeout=args.request_timeout,
        max_queue=args.max_queue,
    )
    if not is_loopback(args.host) and api_key is None:
        log.warning(
            "binding to %s: anyone who can reach this address can use the model (no API key; "
            "set %s or --api-key)",
            args.host,
            API_KEY_ENV,
        )
    if api_key is not None:
        log.info("an API key is required on /v1/ requests")
    print(
        f"serving {name} on http://{args.host}:{args.port}/  (OpenAI base_url: http://{args.host}:{args.port}/v1)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning")
    return 0
