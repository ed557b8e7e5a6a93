"""What every tracker backend offers, what it is told about the run, and the check for its package.

A backend logs scalars against a named x axis, logs a table, and closes. Each backend module
imports its library inside its constructor, through :func:`require`, so choosing
``tracking.report_to: [wandb]`` is the only way ``wandb`` is ever imported.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from selfsynth.errors import SelfsynthError

# backend -> (the module it imports, the pip extra that installs it)
PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
    "mlflow": ("mlflow", "mlflow"),
}


def _missing(backend: str) -> SelfsynthError:
    module, extra = PACKAGES[backend]
    return SelfsynthError(
        f"tracking.report_to={backend} needs the {module} package, which is not installed: "
        f"pip install 'selfsynth[{extra}]' (or drop {backend} from tracking.report_to)"
    )


def check_installed(backends: Sequence[str]) -> None:
    """Raise for the first chosen backend whose package is missing, without importing any of them."""
    for name in backends:
        if name in PACKAGES and importlib.util.find_spec(PACKAGES[name][0]) is None:
            raise _missing(name)


def require(backend: str, module: str | None = None) -> ModuleType:
    """Import ``module`` (default: the backend's package), or a SelfsynthError naming the extra."""
    try:
        return importlib.import_module(module or PACKAGES[backend][0])
    except ImportError:
        raise _missing(backend) from None


@dataclass
class RunInfo:
    """What a backend is told about the run when it starts."""

    run_dir: Path
    name: str  # the run's name (``name`` setting)
    project: str  # W&B / trackio project, MLflow experiment
    config: dict[str, Any]  # every setting, nested as in config.yaml
    mlflow_uri: str = ""
    # Backends keep ids here (a W&B run id, an MLflow run id) so a resumed run logs to the same run.
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        """``RUN/tracking``: local stores and state; outside every stage folder, so no stage clears it."""
        return self.run_dir / "tracking"


class Tracker(Protocol):
    """One experiment tracker: ``log_metrics`` against an x axis, ``log_table``, ``close``."""

    name: str

    def log_metrics(self, values: Mapping[str, float], *, step: int, axis: str) -> None:
        """Scalars at ``step`` of the x axis named ``axis`` (e.g. ``train/round_1/step``)."""
        ...

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, step: int, axis: str
    ) -> None:
        """A table of ``rows`` under ``key``, at ``step`` of ``axis``."""
        ...

    def close(self, failed: bool = False) -> None: ...


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"finetune": {"lr": 1e-5}}`` -> ``{"finetune.lr": 1e-5}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, name + "."))
        else:
            out[name] = value
    return out


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-style markdown table; ``|`` and newlines inside cells are escaped."""

    def cell(v: Any) -> str:
        return str("" if v is None else v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)
