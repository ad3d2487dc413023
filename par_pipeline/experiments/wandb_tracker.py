"""Weights & Biases: one W&B run per par run folder in the project `--experiment`, a sweep's points in one group; its
files under RUN/wandb/ (with WANDB_MODE=offline everything stays there for `wandb sync`)."""
from __future__ import annotations

import secrets
from typing import Any

import wandb

from . import SweepEntry, TrackedRun

SETTINGS = dict(silent=True, console="off", x_disable_stats=True, disable_git=True, save_code=False)


class WandbTracker:
    # W&B's service process buffers the run's log: only finish() makes it whole (measured: the offline run file held
    # its 7-byte header alone after a kill -9, even after run.status() answered)
    durable = False

    def __init__(self, run: TrackedRun, state: dict[str, Any]):
        run_id = state.get("id") or secrets.token_hex(4)
        project = state.get("project", run.experiment)
        group = run.group.get("wandb", {}).get("group")
        self.run = wandb.init(project=project, name=run.name, id=run_id, group=group, dir=str(run.folder),
                              resume="allow", reinit="create_new", job_type="train",
                              settings=wandb.Settings(**SETTINGS))
        self.state = {"project": project, "id": run_id, **({"group": group} if group else {})}

    def params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def metrics(self, figures: dict[str, float], step: int) -> None:
        self.run.log(figures, step=step)

    def final(self, figures: dict[str, float], step: int) -> None:
        self.run.summary.update(figures)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


def open_tracker(run: TrackedRun, state: dict[str, Any]) -> WandbTracker | SweepEntry:
    if run.kind == "sweep":  # no W&B run of its own: its points share a group named after the sweep's folder
        return SweepEntry({"group": state.get("group") or f"{run.name}-{secrets.token_hex(3)}"})
    return WandbTracker(run, state)
