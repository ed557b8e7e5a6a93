"""Checks that a path is a local Hugging Face model directory, with an error that names the fix."""

from __future__ import annotations

from pathlib import Path

from selfsynth.errors import SelfsynthError


def check_model_dir(path: str | Path) -> Path:
    """``path`` as a Path if it is a local model directory; a SelfsynthError naming the fix otherwise."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise SelfsynthError(
            f"{p}: model directory not found; set model.path to a local Hugging Face model "
            "directory (models are never downloaded)"
        )
    if not (p / "config.json").is_file():
        raise SelfsynthError(
            f"{p}: no config.json here, so this is not a Hugging Face model directory; "
            "point model.path at the folder that holds config.json and the weights"
        )
    return p
