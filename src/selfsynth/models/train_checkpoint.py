"""Checkpoints of LoRA training: written whole under a new name, then published by an atomic rename.

``OUT/checkpoint`` is a symlink to ``OUT/checkpoint-<step>/`` (adapter, ``optim.pt``,
``state.json`` with the step, the batch plan and the loss log). A save writes the new step's
folder under a hidden temp name, fsyncs it, renames it into place, then swaps the link with
``os.replace``; older folders go only after that. At every instant the newest complete
checkpoint is on disk, so a kill in the middle of a save resumes from the one before.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from selfsynth.io import fsync_dir, fsync_tree, write_json

log = logging.getLogger(__name__)
LINK = "checkpoint"
_STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


def save_checkpoint(out: Path, model: Any, opt: Any, sched: Any, step: int, plan: dict[str, int]) -> Path:
    """Write step ``step``'s checkpoint of ``model`` (a peft model) and point ``OUT/checkpoint`` at it."""
    out = Path(out)
    final = out / f"{LINK}-{step:06d}"
    tmp = out / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp / "adapter")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, tmp / "optim.pt")
    rows = (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    # state.json goes last: a folder holding it is complete
    write_json(tmp / "state.json", {"step": step, **plan, "log": [json.loads(r) for r in rows if r.strip()]})
    fsync_tree(tmp)
    if final.exists():  # left by an earlier attempt at this step that the link never named
        shutil.rmtree(final)
    os.rename(tmp, final)
    _point_link(out, final)
    for old in [*_step_dirs(out), *out.glob(f".{LINK}-*.tmp")]:  # older ones and any a kill left
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint at step %d/%d in %s", step, plan["steps"], final)
    return final


def _point_link(out: Path, target: Path) -> None:
    link = out / LINK
    if link.is_dir() and not link.is_symlink():  # a plain folder from an older layout: keep it by step
        old = _step_of(link)
        if old is None or (out / f"{LINK}-{old:06d}").exists():
            shutil.rmtree(link)
        else:
            os.rename(link, out / f"{LINK}-{old:06d}")
    tmp_link = out / f".{LINK}.link"
    tmp_link.unlink(missing_ok=True)
    os.symlink(target.name, tmp_link)
    os.replace(tmp_link, link)
    fsync_dir(out)


def _step_of(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / "state.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _step_dirs(out: Path) -> list[Path]:
    return sorted(d for d in out.glob(f"{LINK}-*") if _STEP_DIR.match(d.name) and d.is_dir())


def find_checkpoint(out: str | Path) -> Path | None:
    """The newest complete checkpoint under ``out`` (its folder), or None."""
    out = Path(out)
    found: list[tuple[int, Path]] = []
    for folder in [out / LINK, *_step_dirs(out)]:
        step = _step_of(folder) if folder.is_dir() else None
        if step is not None:
            found.append((step, folder))
    return max(found, key=lambda f: f[0])[1] if found else None


def remove_checkpoints(out: str | Path) -> None:
    """Delete every checkpoint of a finished training (the link first, so none points at a half-deleted folder)."""
    out = Path(out)
    link = out / LINK
    if link.is_symlink():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link, ignore_errors=True)
    for d in [*_step_dirs(out), *out.glob(f".{LINK}-*.tmp")]:
        shutil.rmtree(d, ignore_errors=True)
    (out / f".{LINK}.link").unlink(missing_ok=True)


def load_checkpoint(
    ckpt: Path, model: Any, opt: Any, sched: Any, plan: dict[str, int]
) -> tuple[int, list[dict[str, Any]]]:
    """Restore ``ckpt`` into model, optimizer and scheduler; (its step, its log rows), or (0, []) for another plan."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    if {k: state.get(k, 0 if k == "grouped" else None) for k in plan} != plan:
        log.warning(
            "checkpoint %s was made for %s, not %s; starting over",
            ckpt,
            {k: state.get(k) for k in plan},
            plan,
        )
        return 0, []
    set_peft_model_state_dict(model, load_file(str(ckpt / "adapter" / "adapter_model.safetensors")))
    blob = torch.load(ckpt / "optim.pt", map_location="cpu", weights_only=True)
    opt.load_state_dict(blob["optimizer"])
    sched.load_state_dict(blob["scheduler"])
    log.info("resuming from step %d/%d", state["step"], plan["steps"])
    return int(state["step"]), [r for r in state["log"] if r["step"] <= state["step"]]
