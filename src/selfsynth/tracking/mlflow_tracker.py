"""``tracking.report_to: [mlflow]``: one MLflow run per run directory, continued on resume.

The store is ``tracking.mlflow_uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file in
``RUN/tracking/mlflow.db`` with artifacts beside it (``mlflow ui --backend-store-uri
sqlite:///RUN/tracking/mlflow.db``). The experiment is ``tracking.project``. Settings become
the run's parameters when it is created; MLflow parameters cannot change, so a resumed run keeps
the first ones (``config.yaml`` in the run directory holds the current settings). Tables are
JSON artifacts in MLflow's table layout (``{"columns": [...], "data": [[...]]}``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from selfsynth.errors import SelfsynthError
from selfsynth.tracking.base import RunInfo, flat, require

PARAM_BATCH = 100  # MLflow takes at most this many parameters per call
PARAM_CHARS = 6000  # and values up to this length


class MlflowTracker:
    name = "mlflow"

    def __init__(self, info: RunInfo) -> None:
        require(self.name)
        client_mod = require(self.name, "mlflow.tracking")
        self.entities = require(self.name, "mlflow.entities")
        uri = info.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        artifacts = None
        if not uri:  # a store of the run's own, like TensorBoard's event files
            info.folder.mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{(info.folder / 'mlflow.db').resolve()}"
            artifacts = (info.folder / "mlflow-artifacts").resolve().as_uri()
        try:
            self.client = client_mod.MlflowClient(tracking_uri=uri)
            self.run_id = self._run(info, artifacts)
        except Exception as e:  # an unreachable server, a store MLflow refuses, a missing driver...
            raise SelfsynthError(
                f"tracking.report_to=mlflow: MLflow could not start a run at {uri}: {e}"
            ) from e
        info.ids[self.name] = self.run_id

    def _run(self, info: RunInfo, artifacts: str | None) -> str:
        known = info.ids.get(self.name)
        if known:
            try:
                self.client.update_run(known, status="RUNNING")
                return known
            except Exception:  # deleted, or another store: start a new run
                pass
        exp = self.client.get_experiment_by_name(info.project)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(info.project, artifacts)
        run_id = self.client.create_run(exp_id, run_name=info.name).info.run_id
        params = [self.entities.Param(k, str(v)[:PARAM_CHARS]) for k, v in sorted(flat(info.config).items())]
        for i in range(0, len(params), PARAM_BATCH):
            self.client.log_batch(run_id, params=params[i : i + PARAM_BATCH])
        return run_id

    def log_metrics(self, values: Mapping[str, float], *, step: int, axis: str) -> None:
        now = int(time.time() * 1000)
        metrics = [self.entities.Metric(k, float(v), now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_table(
        self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, step: int, axis: str
    ) -> None:
        table = {"columns": list(columns), "data": [list(r) for r in rows]}
        self.client.log_dict(self.run_id, table, f"{key}.json")

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")
