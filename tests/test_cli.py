"""`par` as a real process: the installed entry point's exit codes, and what Ctrl-C leaves behind."""
import json
import os
import signal
import subprocess
import sys
import time

from conftest import ROOT, SMALL_TRAIN, ForkedPar, flags, par_env


def test_entry_point_usage_error_exits_2():
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "par"), "eval"], capture_output=True, text=True, env=par_env())
    assert proc.returncode == 2 and "Missing argument" in proc.stderr


def test_ctrl_c_ends_with_130_and_says_how_to_resume(store_path, tmp_path):
    """Ctrl-C: 130 and the command that resumes, which needs nothing but --out and --resume (the run's options are
    in its config.json), and does resume."""
    from par_pipeline.model.checkpoint import load_checkpoint
    from par_pipeline.run import RunFolder

    run = tmp_path / "run"

    def interrupted(args: list[str], after_epoch: int) -> str:
        proc = ForkedPar(args)  # a process of its own, Ctrl-C as from a shell
        deadline = time.time() + 120
        while time.time() < deadline and not (
                (run / "last.json").exists() and json.loads((run / "last.json").read_text())["epoch"] > after_epoch):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        # the committed epochs stay; a commit under way when it stopped is finished or dropped on the next open
        RunFolder(run).recover()
        return err

    err = interrupted(["train", str(store_path), "--out", str(run), *flags({**SMALL_TRAIN, "epochs": 2000})], 0)
    assert "interrupted; `par train --out RUN --resume` continues it" in " ".join(err.split()), err
    _, meta = load_checkpoint(run / "last.json")
    assert meta["epoch"] >= 1 and not (run / ".pending").exists()
    interrupted(["train", "--out", str(run), "--resume"], meta["epoch"])  # only --out and --resume
    _, resumed = load_checkpoint(run / "last.json")
    assert resumed["epoch"] > meta["epoch"]


def test_par_does_not_import_wandb_for_timm():
    """timm imports wandb whenever it is installed (about half a second of every start, and it wraps stdout): in a
    par process timm hears 'not installed', open_clip and the fusion model load as usual, and par's own W&B tracker
    still imports wandb."""
    code = ("import sys, cli.main, par_pipeline.workflows.train, open_clip; "
            "assert 'timm' in sys.modules and 'wandb' not in sys.modules; "
            "from par_pipeline.experiments import wandb_tracker; import wandb; print('imported', wandb.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=par_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "imported wandb" in proc.stdout, proc.stderr[-2000:]
