"""Experiment trackers (`--log-to tensorboard,mlflow,wandb`): a run's figures where researchers already look.

`log.jsonl` stays the source of truth; a tracker holds a copy. Each run folder keeps `RUN/trackers.json`: per
tracker, which tracked run it is (the TensorBoard folder, the MLflow run id, the W&B run id) and the last epoch that
tracker has. A resumed run (kill -9, then `--resume`) continues the same tracked run from the next epoch: no step
twice, none missing; `par export-logs` sends what a live run could not. A tracker that fails is reported once and
left out for the rest of the command; training goes on.

Every tracker receives the same things under the same names: the run's configuration as flat hyperparameters
(`hyperparameters`), each epoch's figures named as in log.jsonl (`figures`), and at the end the selected epoch's
figures under `selected/` (and `par eval`'s under `eval/<folder>/`).
"""
from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..errors import ParError, masked
from ..outputs import write_json

# name -> (the package its extra installs, the module of par's side of it)
TRACKERS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "par_pipeline.experiments.tensorboard_tracker"),
    "mlflow": ("mlflow", "par_pipeline.experiments.mlflow_tracker"),
    "wandb": ("wandb", "par_pipeline.experiments.wandb_tracker"),
}
TRACKERS_FILE = "trackers.json"
TRACKERS_FORMAT = "par-trackers"
TRACKERS_VERSION = 1
DEFAULT_EXPERIMENT = "par"

Warn = Callable[[str], None]


def log_warning(message: str) -> None:
    """Where a tracker's failure is reported when the caller gives no other place (the CLI prints it)."""
    logging.getLogger("par").warning(message)


@dataclass
class TrackedRun:
    """What a tracker names, groups and finds a run by."""
    folder: Path
    experiment: str = DEFAULT_EXPERIMENT  # MLflow experiment, W&B project
    group: dict[str, dict[str, Any]] = field(default_factory=dict)  # per tracker, the sweep's ids (parent run, group)
    continuing: bool = True  # False: add figures to a run without changing its state (par eval)
    kind: str = "train"  # a training run, or a sweep's parent

    @property
    def name(self) -> str:
        return self.folder.name


class Tracker(Protocol):
    state: dict[str, Any]  # what finds this tracked run again (kept in trackers.json)
    # True: what a call sent is kept once it returns (a flushed file, a server's answer), so trackers.json may say so
    # at once; False: kept only once the run is closed (W&B's service process buffers its log and loses it on kill -9)
    durable: bool

    def params(self, params: dict[str, Any]) -> None: ...

    def metrics(self, figures: dict[str, float], step: int) -> None: ...

    def final(self, figures: dict[str, float], step: int) -> None:
        """Figures that are not a point of the training curve (the selected epoch, an evaluation)."""

    def close(self, ok: bool) -> None: ...


class SweepEntry:
    """A tracker's entry for a sweep that has no run of its own there: only what its points are grouped by."""

    durable = True

    def __init__(self, state: dict[str, Any]):
        self.state = state

    def params(self, params: dict[str, Any]) -> None:
        pass

    def metrics(self, figures: dict[str, float], step: int) -> None:
        pass

    def final(self, figures: dict[str, float], step: int) -> None:
        pass

    def close(self, ok: bool) -> None:
        pass


def check_trackers(names: list[str], option: str = "--log-to") -> None:
    """Each tracker's package imports, or one line naming the install command (before anything is written)."""
    for name in names:
        package, _ = TRACKERS[name]
        try:
            importlib.import_module(package)
        except ImportError:
            raise ParError(f"{option} {name} needs the {package} package, which is not installed here: "
                           f"pip install 'par[{name}]'") from None


# How to find a tracked run (or a sweep's runs), from what trackers.json keeps of it.
WHERE = {"tensorboard": "tensorboard --logdir {folder}/{logdir}", "mlflow": "MLflow run {run_id} at {tracking_uri}",
         "wandb": "W&B run {project}/{id}"}
WHERE_SWEEP = {"tensorboard": "tensorboard --logdir {folder}/runs",
               "mlflow": "MLflow parent run {run_id} at {tracking_uri}", "wandb": "W&B group {group}"}


def where(name: str, folder: Path, state: dict[str, Any], sweep: bool = False) -> str:
    return (WHERE_SWEEP if sweep else WHERE)[name].format(folder=folder, **state)


def figures(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """A log.jsonl record (or an evaluation's figures) as flat numbers: nested names joined by '/', no epoch, no
    missing values."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch" or value is None:
            continue
        if isinstance(value, dict):
            out.update(figures(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def hyperparameters(config: dict[str, Any], store_identity: dict[str, Any] | None) -> dict[str, Any]:
    """The run's configuration (config.json's options, recipe and overrides) and its store's identity as flat
    name -> value (dots between levels; a value is a number, bool or text, lists and null as JSON)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, name: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)

    walk({"train": config["train"], "recipe": config["recipe"], "store": store_identity or {}}, "")
    return flat


def read_record(folder: Path) -> dict[str, dict[str, Any]]:
    """Per tracker, what trackers.json says (empty when the folder was never logged)."""
    path = folder / TRACKERS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != TRACKERS_FORMAT:
            raise ValueError
        return dict(data["trackers"])
    except (OSError, ValueError, KeyError, AttributeError):
        raise ParError(f"{path}: damaged; move it away (the trackers then start new tracked runs for this "
                       f"folder) or restore it") from None


class ExperimentLog:
    """The trackers of one run folder (or a sweep's folder): opened, fed, and recorded in trackers.json."""

    def __init__(self, names: list[str], run: TrackedRun, warn: Warn | None = None):
        self.run, self.warn = run, warn or log_warning
        self.record = read_record(run.folder)
        self._saved = json.dumps(self.record, sort_keys=True)
        self.unsaved: dict[str, dict[str, Any]] = {}  # progress of trackers that keep it only once closed
        self.trackers: dict[str, Tracker] = {}
        for name in names:
            state = self.record.get(name, {})
            opened = self._guard(name, "starting", lambda: _open(name, run, state))
            if opened is not None:
                self.trackers[name] = opened
                self.record[name] = {**state, **opened.state}
        self._save()

    @classmethod
    def of_folder(cls, run: TrackedRun, warn: Warn | None = None) -> ExperimentLog:
        """The trackers a folder was logged to (none when it never was)."""
        return cls(sorted(read_record(run.folder)), run, warn)

    def state(self, name: str) -> dict[str, Any]:
        return {**self.record.get(name, {}), **self.unsaved.get(name, {})}

    def group(self) -> dict[str, dict[str, Any]]:
        """What a sweep's points are grouped by, per tracker that is logging."""
        return {name: self.state(name) for name in self.trackers}

    def start(self, params: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """Hyperparameters (once per tracked run), then every committed epoch a tracker does not have yet."""
        for name in list(self.trackers):
            if not self.state(name).get("params"):
                self._call(name, "logging the configuration", lambda t: t.params(params), {"params": True})
        for record in history:
            self.epoch(record)

    def epoch(self, record: dict[str, Any]) -> None:
        values = figures(record)
        for name in list(self.trackers):
            if record["epoch"] > self.state(name).get("logged_epoch", 0):
                self._call(name, f"logging epoch {record['epoch']}", lambda t: t.metrics(values, record["epoch"]),
                           {"logged_epoch": record["epoch"]})

    def final(self, figures_: dict[str, float], step: int, once: str | None = None) -> None:
        """Figures beside the curve at `step`; with `once`, a tracker that has them (recorded under that key) is
        skipped."""
        for name in list(self.trackers):
            if once is None or self.state(name).get(once) != step:
                self._call(name, "logging the results", lambda t: t.final(figures_, step),
                           {once: step} if once else None)

    def selected(self, best: dict[str, Any]) -> None:
        """The selected epoch's figures (its log.jsonl record) under `selected/`, once per tracked run."""
        self.final(figures(best, "selected/") | {"selected/epoch": best["epoch"]}, best["epoch"], once="selected")

    def close(self, ok: bool) -> None:
        for name in list(self.trackers):
            self._call(name, "closing", lambda t: t.close(ok), self.unsaved.pop(name, {}), closing=True)
        self.trackers.clear()

    # --- failures: once per tracker, never fatal ---
    def _call(self, name: str, doing: str, action: Callable[[Tracker], None], progress: dict[str, Any] | None = None,
              closing: bool = False) -> None:
        """`action` on one tracker; then its `progress` goes to trackers.json once the tracker keeps what it got."""
        tracker = self.trackers[name]
        if self._guard(name, doing, lambda: action(tracker) or True) is None or not progress:
            return
        if tracker.durable or closing:
            self.record[name] = {**self.record.get(name, {}), **progress}
            self._save()
        else:
            self.unsaved[name] = {**self.unsaved.get(name, {}), **progress}

    def _guard(self, name: str, doing: str, action: Callable[[], Any]) -> Any:
        """`action()`'s result, or None when it failed: then the tracker is reported (once) and left out."""
        try:
            return action()
        except Exception as exc:  # a tracker's own failure (server gone, disk full, refused login) ends only it
            self.trackers.pop(name, None)
            self.warn(f"{name}: {doing} failed ({masked(f'{type(exc).__name__}: {exc}')[:300]}); carrying on "
                      f"without {name} - log.jsonl has every figure, `par export-logs {self.run.folder} --to {name}` "
                      f"sends the rest later")
            return None

    def _save(self) -> None:
        now = json.dumps(self.record, sort_keys=True)
        if now != self._saved:  # only what changed: `par eval` adds figures without writing into the run folder
            write_json(self.run.folder / TRACKERS_FILE,
                       {"format": TRACKERS_FORMAT, "version": TRACKERS_VERSION, "trackers": self.record})
            self._saved = now


def _open(name: str, run: TrackedRun, state: dict[str, Any]) -> Tracker:
    module = importlib.import_module(TRACKERS[name][1])
    return module.open_tracker(run, state)


def log_evaluation(run_folder: Path, name: str, figures_: dict[str, float], epoch: int,
                   warn: Warn | None = None) -> list[str]:
    """`par eval`'s figures added to the tracked run of the run it evaluated (as `eval/<name>/...` at the
    checkpoint's epoch), for each tracker that run was logged to; returns those trackers."""
    try:
        log = ExperimentLog.of_folder(TrackedRun(run_folder, continuing=False), warn)
    except ParError as exc:  # the evaluation is written and stands; only its copy in the trackers is missing
        (warn or log_warning)(str(exc))
        return []
    log.final({f"eval/{name}/{k}": v for k, v in figures_.items()}, epoch)
    logged = sorted(log.trackers)
    log.close(ok=True)
    return logged


def open_sweep(names: list[str], folder: Path, experiment: str, warn: Warn | None = None) -> ExperimentLog:
    """A sweep's own tracked entry (an MLflow parent run; a W&B group name; TensorBoard needs none: its points are
    folders), kept in FOLDER/trackers.json so a resumed sweep keeps it. `group()` is what its points join."""
    return ExperimentLog(names, TrackedRun(folder, experiment, kind="sweep"), warn)


def sweep_figures(rows: list[dict[str, Any]]) -> dict[str, float]:
    """An ablation's table for the sweep's own entry: `<variant>/T<frames>/<figure>` (means over seeds)."""
    keys = ("precision", "recall", "f1", "mA")
    return {f"{r['variant']}/T{r['frames']}/{k}": float(r[k]) for r in rows for k in keys}
