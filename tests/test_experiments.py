"""Experiment trackers, the real things offline: TensorBoard event files read back with tensorboard's own
EventAccumulator, MLflow through a real `mlflow server` on 127.0.0.1 (SQLite backend, file artifact store) read back
with MlflowClient, W&B in offline mode with its run files read back. Each holds exactly log.jsonl's figures (each
epoch once, also after kill -9 and --resume) and config.json's options as hyperparameters."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SMALL_TRAIN, TRAIN, one_error_line, run_par, run_par_forked, train_config
from tracked import (
    expected_curve,
    expected_params,
    mlflow_curve,
    same_curve,
    tensorboard_hparams,
    tensorboard_scalars,
    trackers_of,
    wandb_config_and_summary,
    wandb_history,
)

ALL = "tensorboard,mlflow,wandb"


def check_all_three(run: Path, client, epochs: int) -> None:
    """The run's log.jsonl, config and selected epoch in each tracker, once each."""
    want, params = expected_curve(run), expected_params(run)
    assert len(want["loss"]) == epochs and "group_f1/backpack" in want
    selected = json.loads((run / "best.json").read_text())["epoch"]
    ids = trackers_of(run)
    # TensorBoard
    scalars = tensorboard_scalars(run / "tensorboard")
    same_curve({k: v for k, v in scalars.items() if "/" not in k or k.startswith("group_f1/")}, want, rel=1e-7)
    assert scalars["selected/f1"] == [(selected, pytest.approx(dict(want["f1"])[selected], rel=1e-7))]
    assert tensorboard_hparams(run / "tensorboard") == pytest.approx(params)
    # MLflow
    info = client.get_run(ids["mlflow"]["run_id"])
    assert info.info.run_name == run.name and info.info.status == "FINISHED"
    assert info.data.params == {k: str(v) for k, v in params.items()}
    curve = mlflow_curve(client, ids["mlflow"]["run_id"])
    same_curve({k: v for k, v in curve.items() if "/" not in k or k.startswith("group_f1/")}, want)
    assert curve["selected/epoch"] == [(selected, selected)]
    # W&B
    same_curve(wandb_history(run, ids["wandb"]["id"]), want)
    config, summary, runs = wandb_config_and_summary(run, ids["wandb"]["id"])
    assert config == params and summary["selected/f1"] == dict(want["f1"])[selected]
    assert {r.display_name for r in runs} == {run.name} and {r.project for r in runs} == {"par-tests"}


# --- a real MLflow server -----------------------------------------------------------------------------------------

class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a SQLite backend and a file artifact store, in a folder of its own."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db", "--default-artifact-root",
             (self.folder / "artifacts").as_uri()],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "server.log", "ab"), start_new_session=True,
            # tracking only: MLflow 3's job execution starts a job runner and seven huey consumers (about 30 s of CPU
            # at each start, on a 2-core machine) that par never uses
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return self
            except OSError:
                assert self.proc.poll() is None, (self.folder / "server.log").read_text()[-3000:]
                time.sleep(0.25)
        raise AssertionError("mlflow server did not answer in 90 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracked_env(mlflow_server):
    return {"MLFLOW_TRACKING_URI": mlflow_server.uri, "WANDB_MODE": "offline"}


@pytest.fixture(scope="module")
def tracked_run(store_path, tracked_env, tmp_path_factory):
    """A 3-epoch run logged to all three trackers, then evaluated; and the fault points it passed."""
    run = tmp_path_factory.mktemp("tracked") / "tracked"
    log = run.with_name("faults.log")
    trained = run_par("train", store_path, "--out", run, *TRAIN, "--epochs", 3, "--log-to", ALL, "--experiment",
                      "par-tests", env={**tracked_env, "PAR_TEST_FAULT_LOG": str(log)})
    evaluated = run_par("eval", store_path, "--checkpoint", run, "--workers", 0, env=tracked_env)
    return run, log.read_text().split(), trained, evaluated


# --- tests --------------------------------------------------------------------------------------------------------

def test_a_run_in_tensorboard_mlflow_and_wandb_is_its_log_and_config(tracked_run, mlflow_server):
    run, _, trained, evaluated = tracked_run
    check_all_three(run, mlflow_server.client(), epochs=3)
    ids = trackers_of(run)
    assert f"mlflow: MLflow run {ids['mlflow']['run_id']} at {mlflow_server.uri}" in trained.stdout
    assert f"tensorboard: tensorboard --logdir {run}/tensorboard" in trained.stdout
    assert "added to the run's tracked runs: mlflow, tensorboard, wandb" in evaluated.stdout
    # par eval's figures joined the same tracked runs, at the evaluated checkpoint's epoch
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    f1, epoch = metrics["protocol"]["mean"]["f1"], metrics["epoch"]
    assert tensorboard_scalars(run / "tensorboard")["eval/test/f1"] == [(epoch, pytest.approx(f1, rel=1e-7))]
    assert mlflow_curve(mlflow_server.client(), ids["mlflow"]["run_id"])["eval/test/f1"] == [(epoch, f1)]
    assert wandb_config_and_summary(run, ids["wandb"]["id"])[1]["eval/test/f1"] == f1
    assert trained.stderr == "" and evaluated.stderr == ""  # nothing of the trackers' own chatter


@pytest.mark.parametrize("window", ["tensorboard", "mlflow"])
def test_kill_9_then_resume_continues_the_same_tracked_runs(window, tracked_run, store_path, tracked_env,
                                                            mlflow_server, tmp_path):
    """Killed after epoch 2 reached one tracker but before trackers.json heard of it (TensorBoard: its events past
    the record are purged; MLflow: the server says what it has), the other not yet told, W&B's unfinished session
    lost by its service: --resume ends with every epoch once in each, in the same tracked runs."""
    _, points, _, _ = tracked_run
    committed = [k for k, p in enumerate(points, 1) if p == "epoch-committed"][1]
    records = [k for k, p in enumerate(points, 1) if p == "before-rename:trackers.json" and k > committed]
    kill_at = records[["tensorboard", "mlflow", "wandb"].index(window)]
    run = tmp_path / "tracked"
    args = ["train", store_path, "--out", run, *TRAIN, "--epochs", 3, "--log-to", ALL, "--experiment", "par-tests"]
    killed = run_par_forked(*args, env={**tracked_env, "PAR_TEST_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = trackers_of(run)
    # W&B's epochs count as kept only once its run is finished (its service loses a killed run's buffered log)
    assert before[window]["logged_epoch"] == 1 and "logged_epoch" not in before["wandb"]
    run_par(*args, "--resume", env=tracked_env)
    after = trackers_of(run)
    assert {k: after[k].get("run_id", after[k].get("id")) for k in after} == \
        {k: before[k].get("run_id", before[k].get("id")) for k in before}
    check_all_three(run, mlflow_server.client(), epochs=3)


def test_a_tracker_that_fails_mid_run_is_reported_once_and_export_logs_sends_the_rest(store_path, tmp_path,
                                                                                       mlflow_server, monkeypatch):
    """The MLflow server goes away after epoch 1: one warning, training ends normally with log.jsonl whole; the
    server back (the same database), `par export-logs` sends epochs 2 and 3 (and the selected epoch) to the same
    MLflow run."""
    from par_pipeline.workflows.train import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    run = tmp_path / "run"
    cfg, recipe = train_config(store_path, run, epochs=3, log_to=["mlflow"])
    warnings: list[str] = []
    try:
        best = train(cfg, recipe, on_epoch=lambda r: mlflow_server.stop() if r["epoch"] == 1 else None,
                     warn=warnings.append)
    finally:
        mlflow_server.start()
    assert len(expected_curve(run)["loss"]) == 3
    assert len(warnings) == 1 and warnings[0].startswith("mlflow: logging epoch 2 failed"), warnings
    assert f"par export-logs {run} --to mlflow" in warnings[0]
    assert trackers_of(run)["mlflow"]["logged_epoch"] == 1
    result = run_par("export-logs", run, "--to", "mlflow")
    assert "│ mlflow  │           2 │            3 │" in result.stdout
    curve = mlflow_curve(mlflow_server.client(), trackers_of(run)["mlflow"]["run_id"])
    same_curve({k: v for k, v in curve.items() if "/" not in k or k.startswith("group_f1/")}, expected_curve(run))
    assert curve["selected/epoch"] == [(best["epoch"], best["epoch"])]


def test_export_logs_replays_an_untracked_run_once(run_path, tracked_env, mlflow_server, tmp_path, monkeypatch):
    """A run trained without --log-to joins all three trackers; exporting it again sends nothing twice."""
    run = tmp_path / "old-run"
    shutil.copytree(run_path, run)
    for key, value in tracked_env.items():
        monkeypatch.setenv(key, value)
    first = run_par("export-logs", run, "--to", ALL, "--experiment", "par-tests")
    again = run_par("export-logs", run, "--to", ALL, "--experiment", "par-tests")
    epochs = SMALL_TRAIN["epochs"]
    assert first.stdout.count(f"│           {epochs} │            {epochs} │") == 3
    assert again.stdout.count(f"│           0 │            {epochs} │") == 3
    check_all_three(run, mlflow_server.client(), epochs=epochs)


def test_tracker_options_errors_are_one_line_and_write_nothing(store_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as on a machine without the extra: importing it fails
    line = one_error_line(run_par("train", store_path, "--out", tmp_path / "r", *TRAIN, "--log-to", "mlflow",
                                  check=False))
    assert line == "error: --log-to mlflow needs the mlflow package, which is not installed here: pip install " \
                   "'par[mlflow]'"
    line = one_error_line(run_par("train", store_path, "--out", tmp_path / "r", *TRAIN, "--log-to", "comet",
                                  check=False))
    assert "--log-to must be each one of ['tensorboard', 'mlflow', 'wandb'], not 'comet'" in line
    line = one_error_line(run_par("export-logs", tmp_path, "--to", "tensorboard", check=False))
    assert line.startswith(f"error: {tmp_path}: neither a run folder with epochs")
    assert list(tmp_path.iterdir()) == []


def test_log_to_from_a_config_file_and_credentials_never_written(store_path, tmp_path):
    """`log_to` in a --config file works as the flag does; a tracking URI's user:password is masked wherever par
    writes or says it."""
    from par_pipeline.errors import masked

    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"log_to": ["tensorboard"]}))
    run_par("train", store_path, "--out", tmp_path / "run", *TRAIN, "--config", config)
    assert sorted(trackers_of(tmp_path / "run")) == ["tensorboard"]
    loss = expected_curve(tmp_path / "run")["loss"]
    assert tensorboard_scalars(tmp_path / "run" / "tensorboard")["loss"] == \
        [(e, pytest.approx(v, rel=1e-7)) for e, v in loss]
    # a damaged trackers.json: the evaluation is written, the trackers' copy is a warning
    (tmp_path / "run" / "trackers.json").write_text("{")
    evaluated = run_par("eval", store_path, "--checkpoint", tmp_path / "run", "--workers", 0)
    assert "trackers.json: damaged" in evaluated.stderr and (tmp_path / "run" / "eval-test" / "metrics.json").is_file()
    assert masked("MlflowException: http://ann:s3cret@10.0.0.1:5000/api failed") == \
        "MlflowException: http://***@10.0.0.1:5000/api failed"


def test_export_logs_of_an_ablation_folder_groups_its_points(store_path, tracked_env, mlflow_server, tmp_path,
                                                             monkeypatch):
    """An ablation run without --log-to, exported: each point a tracked run named as its folder, nested under the
    sweep's MLflow parent run (named as the results folder, holding the table) and in one W&B group."""
    from par_pipeline.workflows.ablation import run_ablation

    for key, value in tracked_env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "sweep"
    run_ablation(str(store_path), out, [1, 2], ["fusion"], 1, None, {**SMALL_TRAIN, "epochs": 1})
    run_par("export-logs", out, "--to", ALL, "--experiment", "par-sweep-tests")
    points = sorted(p.name for p in (out / "runs").iterdir())
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name("par-sweep-tests").experiment_id
    runs = {r.info.run_name: r for r in client.search_runs([experiment])}
    assert sorted(runs) == sorted([*points, "sweep"]) and len(points) == 2
    assert {runs[p].data.tags["mlflow.parentRunId"] for p in points} == {runs["sweep"].info.run_id}
    table = json.loads((out / "ablation.json").read_text())["rows"]
    assert runs["sweep"].data.metrics["fusion/T2/f1"] == next(r["f1"] for r in table if r["frames"] == 2)
    group = trackers_of(out)["wandb"]["group"]
    assert group.startswith("sweep-") and {trackers_of(out / "runs" / p)["wandb"]["group"] for p in points} == {group}
    for p in points:
        assert tensorboard_scalars(out / "runs" / p / "tensorboard")["loss"][0][0] == 1
