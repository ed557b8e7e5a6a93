"""``tracking.report_to: [wandb]``: one Weights & Biases run per run directory, continued on resume.

The W&B run id is drawn once and kept in ``RUN/tracking/state.json``, so ``--resume`` logs to the
same W&B run (``resume="allow"``). Each round's training curve has its own x axis
(``train/round_<r>/step``) and the per-round metrics theirs (``eval/round``), declared with
``define_metric``, because W&B's own step must only grow while every round's steps start at 1.
``WANDB_MODE=offline`` works as usual; without ``WANDB_DIR`` the run's files go under
``RUN/tracking/wandb``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from selfsynth.errors import SelfsynthError
from selfsynth.tracking.base import RunInfo, require


class WandbTracker:
    name = "wandb"

    def __init__(self, info: RunInfo) -> None:
        self.wandb = wandb = require(self.name)
        run_id = info.ids.get(self.name) or secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        info.folder.mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=info.project,
                name=info.name,
                id=run_id,
                resume="allow",
                dir=os.environ.get("WANDB_DIR") or str(info.folder),
                # The CLI's own output stays as it is: W&B does not wrap stdout and stderr.
                settings=wandb.Settings(console="off"),
            )
        except Exception as e:  # no API key, no network and not offline, a bad project name...
            raise SelfsynthError(f"tracking.report_to=wandb: W&B could not start a run: {e}") from e
        self.run.config.update(info.config, allow_val_change=True)
        info.ids[self.name] = run_id
        self._axes: set[str] = set()

    def _axis(self, axis: str) -> None:
        if axis not in self._axes:
            prefix = axis.rpartition("/")[0]
            self.run.define_metric(axis)
            self.run.define_metric(f"{prefix}/*", step_metric=axis)
            self._axes.add(axis)

    def log_metrics(self, values: Mapping[str, float], *, step: int, axis: str) -> None:
        self._axis(axis)
        self.run.log({**values, axis: step})

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, step: int, axis: str
    ) -> None:
        self._axis(axis)
        table = self.wandb.Table(columns=list(columns), data=[list(r) for r in rows])
        self.run.log({key: table, axis: step})

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
