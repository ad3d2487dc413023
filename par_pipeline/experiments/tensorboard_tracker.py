"""TensorBoard: event files in RUN/tensorboard/, so `tensorboard --logdir` on a folder of runs (or a sweep's `runs/`)
shows one run per folder. Hyperparameters go to the HParams view of the same run."""
from __future__ import annotations

from typing import Any

from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard import SummaryWriter

from . import SweepEntry, TrackedRun

LOGDIR = "tensorboard"


class TensorBoardTracker:
    durable = True

    def __init__(self, run: TrackedRun, state: dict[str, Any]):
        self.state = {"logdir": LOGDIR}
        # A resumed run may have written events past what trackers.json records (killed between the two): a purge
        # step hides every event from the first epoch the record lacks, which is logged again.
        purge = state.get("logged_epoch", 0) + 1 if state and run.continuing else None
        self.writer = SummaryWriter(str(run.folder / LOGDIR), purge_step=purge)

    def params(self, params: dict[str, Any]) -> None:
        # tensorboard's own HParams record (torch's add_hparams would start another run folder, and stores bools as
        # numbers); the HParams view takes the run's scalars as its metrics
        self.writer.file_writer.add_summary(hparams_pb(params))
        self.writer.flush()

    def metrics(self, figures: dict[str, float], step: int) -> None:
        for tag, value in figures.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def final(self, figures: dict[str, float], step: int) -> None:
        self.metrics(figures, step)

    def close(self, ok: bool) -> None:
        self.writer.close()


def open_tracker(run: TrackedRun, state: dict[str, Any]) -> TensorBoardTracker | SweepEntry:
    # A sweep needs nothing in TensorBoard: its points are folders side by side.
    return SweepEntry({}) if run.kind == "sweep" else TensorBoardTracker(run, state)
