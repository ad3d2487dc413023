"""`par export-logs`: runs' log.jsonl and config.json replayed into experiment trackers, so runs trained without
--log-to (or whose tracker failed) join the same dashboard. What a tracker already has (RUN/trackers.json) is not sent
again: exporting a run twice, or one logged live, adds no step twice. An ablation folder exports each of its points
as a tracked run of its own in the sweep's group, with the sweep's table on the sweep's own entry."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ParError
from ..experiments import (
    DEFAULT_EXPERIMENT,
    TRACKERS,
    ExperimentLog,
    TrackedRun,
    Warn,
    check_trackers,
    hyperparameters,
    open_sweep,
    read_record,
    sweep_figures,
)
from ..outputs import exclusive, read_marker
from ..run import LOG_FILE, RUN_KIND, RunFolder, read_checkpoint_meta
from .ablation import ABLATION_KIND


@dataclass
class Exported:
    run: Path
    tracker: str
    sent: int  # epochs sent now (those the tracker did not have)
    logged: int  # epochs the tracked run holds now
    state: dict[str, Any]  # what finds the tracked run (trackers.json)


def export_logs(paths: list[Path], to: list[str], experiment: str = DEFAULT_EXPERIMENT,
                warn: Warn | None = None) -> list[Exported]:
    unknown = [t for t in to if t not in TRACKERS]
    if unknown or not to:
        raise ParError(f"--to takes {', '.join(TRACKERS)} (several separated by commas), not '{','.join(to)}'")
    check_trackers(to, "--to")
    kinds = [(Path(p), _kind(Path(p))) for p in paths]  # every path checked before anything is sent
    done: list[Exported] = []
    for path, kind in kinds:
        if kind == RUN_KIND:
            done += _export_run(path, to, experiment, {}, warn)
            continue
        with exclusive(path, "export-logs"):
            sweep = open_sweep(to, path, experiment, warn)
            for point in sorted(p for p in (path / "runs").glob("*") if (p / LOG_FILE).is_file()):
                done += _export_run(point, to, experiment, sweep.group(), warn)
            table = path / "ablation.json"
            if table.is_file():
                sweep.final(sweep_figures(json.loads(table.read_text())["rows"]), 0)
            sweep.close(ok=True)
    return done


def _kind(path: Path) -> str:
    marker = read_marker(path) if path.is_dir() else None
    kind = marker.get("kind") if marker else None
    if kind == RUN_KIND and (path / LOG_FILE).is_file():
        return kind
    if kind == ABLATION_KIND:
        return kind
    raise ParError(f"{path}: neither a run folder with epochs (par train) nor an ablation folder (par ablation); "
                   f"nothing to export")


def _export_run(folder: Path, to: list[str], experiment: str, group: dict[str, dict[str, Any]],
                warn: Warn | None) -> list[Exported]:
    run = RunFolder(folder)
    with exclusive(folder, "export-logs"):
        config, history = run.read_config(), run.read_log()
        _, last = read_checkpoint_meta(run.checkpoint_json("last"))
        _, best = read_checkpoint_meta(run.checkpoint_json("best"))
        before = read_record(folder)
        log = ExperimentLog(to, TrackedRun(folder, experiment, group), warn)
        log.start(hyperparameters(config, last["store_identity"]), history)
        selected = next((r for r in history if r["epoch"] == best["epoch"]), None)
        if selected is not None:
            log.selected(selected)
        sent = [name for name in to if name in log.trackers]
        log.close(ok=True)
    return [Exported(folder, name, log.state(name).get("logged_epoch", 0) -
                     before.get(name, {}).get("logged_epoch", 0), log.state(name).get("logged_epoch", 0),
                     log.state(name)) for name in sent]
