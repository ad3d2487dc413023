"""MLflow: one MLflow run per par run folder, in the experiment `--experiment`, at the tracking URI MLflow itself is
pointed at (MLFLOW_TRACKING_URI, else MLflow's default); a sweep is a parent run with its points nested under it."""
from __future__ import annotations

import os
import time
from typing import Any

# A tracking server that is gone should cost seconds once (then the tracker is dropped), not MLflow's default of
# minutes of retries per call; a user's own settings win.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from ..errors import masked  # noqa: E402
from . import TrackedRun  # noqa: E402

EPOCH_KEY = "loss"  # a figure every epoch's record has
PARAMS_PER_CALL = 100  # MLflow's limit for one log_batch
METRICS_PER_CALL = 1000


class MlflowTracker:
    durable = True

    def __init__(self, run: TrackedRun, state: dict[str, Any]):
        recorded = state.get("tracking_uri")
        uri = recorded if recorded and "***@" not in recorded else mlflow.get_tracking_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.continuing = run.continuing
        if "run_id" in state:
            self.run_id, experiment_id = state["run_id"], state["experiment_id"]
            if run.continuing:
                self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment_id = _experiment(self.client, run.experiment)
            tags = {"par.folder": str(run.folder.resolve()), "par.kind": run.kind}
            parent = run.group.get("mlflow", {}).get("run_id")
            if parent:
                tags["mlflow.parentRunId"] = parent
            self.run_id = self.client.create_run(experiment_id, run_name=run.name, tags=tags).info.run_id
        self.state = {"tracking_uri": masked(uri), "experiment_id": experiment_id, "run_id": self.run_id}
        if "run_id" in state and run.continuing:
            # The server knows which epochs it has (an epoch is one log_batch: all of it or none), also one sent just
            # before a kill -9 that trackers.json did not hear of: it is not sent twice.
            steps = [m.step for m in self.client.get_metric_history(self.run_id, EPOCH_KEY)]
            self.state["logged_epoch"] = max(steps, default=0)

    def params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=items[i:i + PARAMS_PER_CALL])

    def metrics(self, figures: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in figures.items()]
        for i in range(0, len(items), METRICS_PER_CALL):
            self.client.log_batch(self.run_id, metrics=items[i:i + METRICS_PER_CALL])

    def final(self, figures: dict[str, float], step: int) -> None:
        self.metrics(figures, step)

    def close(self, ok: bool) -> None:
        if self.continuing:
            self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def _experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name)
        except MlflowException:  # created meanwhile by another run
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    return found.experiment_id


def open_tracker(run: TrackedRun, state: dict[str, Any]) -> MlflowTracker:
    return MlflowTracker(run, state)
