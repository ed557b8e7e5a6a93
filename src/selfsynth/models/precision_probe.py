"""Choose CPU precision by measuring it: a few steps of each workload in fp32 and in bf16 autocast.

A CPU that advertises bf16 instructions may still run bf16 slower than fp32 (AVX512-BF16 without
AMX speeds up the matmul but pays for conversions around every other op), so the choice is made
on the machine itself and cached per machine: CPU model, thread count and torch version.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from selfsynth.cache import default_cache_root

log = logging.getLogger(__name__)

WORKLOADS = ("train", "encode", "embed")
# bf16 must beat fp32 by this factor: it also rounds, so a tie goes to fp32.
MIN_SPEEDUP = 1.1
_CACHE_NAME = "cpu-precision.json"
_memo: dict[str, str] = {}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What the measurement depends on: CPU model, torch's and oneDNN's kernel level, threads, torch version."""
    cap = torch.backends.cpu.get_cpu_capability()
    # ONEDNN_MAX_CPU_ISA caps oneDNN's kernels (AVX512_CORE_BF16 turns AMX off), which changes the answer
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    key = f"{_cpu_name()} | {cap} | threads={torch.get_num_threads()} | torch {torch.__version__}"
    return f"{key} | onednn<={isa}" if isa else key


def _train_step() -> Callable[[], None]:
    """One fwd+bwd of a Llama decoder the size of the embedded base's (half a LoRA step's batch).

    A real decoder rather than a bare matmul: on some CPUs bf16 wins the matmuls and loses more
    on the norms, softmax and casts around them.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=3,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "eager"  # what CPU training uses (devices.attention_for)
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, config.vocab_size, (16, 128))

    def step() -> None:
        model(input_ids=ids, labels=ids).loss.backward()

    return step


def _encode_step() -> Callable[[], None]:
    """A forward pass of an inverted-residual conv stack (the image tower's kind of layers)."""
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 32, 3, stride=2, padding=1), torch.nn.ReLU6()]
    for cin, cout in ((32, 48), (48, 96), (96, 160)):
        layers += [
            torch.nn.Conv2d(cin, cin * 4, 1),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(cin * 4, cin * 4, 3, stride=2, padding=1, groups=cin * 4),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(cin * 4, cout, 1),
        ]
    net = torch.nn.Sequential(*layers).eval().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 256, 256).to(memory_format=torch.channels_last)

    def step() -> None:
        with torch.no_grad():
            net(x)

    return step


def _embed_step() -> Callable[[], None]:
    """A forward pass of a BERT encoder the size of the default sentence encoder (MiniLM-L6)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=4096, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    model = BertModel(config).eval()
    ids = torch.randint(0, config.vocab_size, (64, 32))

    def step() -> None:
        with torch.inference_mode():
            model(input_ids=ids)

    return step


_STEPS = {"train": _train_step, "encode": _encode_step, "embed": _embed_step}


def _time_pair(
    step_fp32: Callable[[], None], step_bf16: Callable[[], None], reps: int = 5
) -> tuple[float, float]:
    """Fastest seconds per step of each, timed alternately.

    Alternating gives both the same background load, and the fastest of several tries is the one
    least disturbed by other processes: a single median taken while something else ran once made
    bf16 and fp32 look equal on a machine where bf16 is 2.6x faster.
    """
    best = {False: float("inf"), True: float("inf")}
    steps = {False: step_fp32, True: step_bf16}
    for bf16 in (False, True):  # the first call compiles oneDNN kernels
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            steps[bf16]()
    for _ in range(reps):
        for bf16 in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                t = time.perf_counter()
                steps[bf16]()
                best[bf16] = min(best[bf16], time.perf_counter() - t)
    return best[False], best[True]


def measure(workload: str) -> dict[str, float | str]:
    """Fastest seconds per step in fp32 and in bf16 autocast, and the choice they imply."""
    if workload not in _STEPS:
        raise ValueError(f"workload {workload!r}: one of {', '.join(WORKLOADS)}")
    # Its own random state: a build that probes first must draw the same numbers as one that found the cache.
    with torch.random.fork_rng(devices=[]):
        fp32, bf16 = _time_pair(_STEPS[workload](), _STEPS[workload]())
    choice = "bf16" if fp32 / bf16 >= MIN_SPEEDUP else "fp32"
    return {"fp32_s": round(fp32, 5), "bf16_s": round(bf16, 5), "choice": choice}


def _bf16_possible() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def measured_choice(workload: str, cache: Path | None = None) -> str:
    """``"bf16"`` or ``"fp32"`` for ``workload`` on this machine, measured once and cached."""
    key = machine_key()
    memo_key = f"{key} | {workload}"
    if memo_key in _memo:
        return _memo[memo_key]
    if not _bf16_possible():
        _memo[memo_key] = "fp32"
        return "fp32"
    path = cache or default_cache_root() / _CACHE_NAME
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    entry = table.get(key, {}).get(workload)
    if not (isinstance(entry, dict) and entry.get("choice") in ("fp32", "bf16")):
        entry = measure(workload)
        log.info(
            "CPU precision for %s: fp32 %.3f s, bf16 %.3f s per probe step -> %s (cached in %s)",
            workload,
            entry["fp32_s"],
            entry["bf16_s"],
            entry["choice"],
            path,
        )
        table.setdefault(key, {})[workload] = entry
        try:
            from selfsynth.io import write_json

            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, table)
        except OSError as e:  # a read-only home still gets the measured choice, just not cached
            log.warning("could not cache the CPU precision choice in %s: %s", path, e)
    _memo[memo_key] = str(entry["choice"])
    return _memo[memo_key]
