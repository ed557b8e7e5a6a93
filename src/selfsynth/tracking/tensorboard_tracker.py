"""``tracking.report_to: [tensorboard]``: event files in ``RUN/tracking/tensorboard``.

``tensorboard --logdir RUN/tracking/tensorboard`` shows them. A resumed run writes a new event
file in the same folder; TensorBoard's reader drops the points a killed process wrote past the
step the new one starts from, so a retrained stretch of a curve is shown once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from selfsynth.tracking.base import RunInfo, markdown_table, require

FLUSH_SECS = 30  # a killed run loses at most this much of its curves


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, info: RunInfo) -> None:
        require(self.name)
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = info.folder / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=FLUSH_SECS)

    def log_metrics(self, values: Mapping[str, float], *, step: int, axis: str) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, step: int, axis: str
    ) -> None:
        # TensorBoard has no table type; its text plugin renders markdown tables.
        self.writer.add_text(key, markdown_table(columns, rows), global_step=step)
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        self.writer.close()
