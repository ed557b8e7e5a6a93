"""``tracking.report_to: [trackio]``: a trackio run, stored where trackio keeps its local projects.

trackio stores runs in SQLite under ``TRACKIO_DIR`` (its default: the Hugging Face cache) and
shows them with ``trackio show --project PROJECT``. Runs are found by name, so the name is drawn
once (the run's ``name`` plus a few random characters, since every run is called ``run`` unless
named) and kept in ``RUN/tracking/state.json``; ``--resume`` continues it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from selfsynth.errors import SelfsynthError
from selfsynth.tracking.base import RunInfo, require


class TrackioTracker:
    name = "trackio"

    def __init__(self, info: RunInfo) -> None:
        self.trackio = trackio = require(self.name)
        run_name = info.ids.get(self.name) or f"{info.name}-{secrets.token_hex(3)}"
        try:
            self.run = trackio.init(project=info.project, name=run_name, config=info.config, resume="allow")
        except Exception as e:
            raise SelfsynthError(f"tracking.report_to=trackio: trackio could not start a run: {e}") from e
        info.ids[self.name] = run_name

    def log_metrics(self, values: Mapping[str, float], *, step: int, axis: str) -> None:
        # Each key is its own series, so every round's curve keeps its own steps from 1.
        self.trackio.log({**values, axis: step}, step=step)

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, step: int, axis: str
    ) -> None:
        table = self.trackio.Table(columns=list(columns), data=[list(r) for r in rows])
        self.trackio.log({key: table}, step=step)

    def close(self, failed: bool = False) -> None:
        self.trackio.finish()
