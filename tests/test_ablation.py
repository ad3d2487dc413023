import csv
import json
import os

import pytest
from PIL import Image

from conftest import run_par
from par_pipeline.errors import ParError
from par_pipeline.workflows import ablation as A

BASE = {
    "epochs": 1,
    "model": "vtf-par-small",
    "batch_size": 4,
    "workers": 0,
    "warmup_epochs": 0,
    "fusion_init": "random",
}
SWEEP = ["--sweep-frames", "1 2", "--variants", "fusion no-fusion", "--epochs", "1", "--model", "vtf-par-small",
         "--batch-size", "4", "--workers", "0", "--warmup-epochs", "0", "--fusion-init", "random"]


def test_sweep_files_and_reuse(store_path, tmp_path):
    res = tmp_path / "res"
    proc = run_par("ablation", store_path, "--out", res, *SWEEP)
    assert "ablation.png" in proc.stdout
    data = json.loads((res / "ablation.json").read_text())
    assert data["format"] == "par-ablation" and len(data["rows"]) == 4 and data["groups"] == 14
    assert {(r["variant"], r["frames"]) for r in data["rows"]} == {("fusion", 1), ("fusion", 2), ("no-fusion", 1),
                                                                  ("no-fusion", 2)}
    rows = list(csv.DictReader(open(res / "ablation.csv")))
    assert list(rows[0])[:8] == ["variant", "frames", "seeds", "precision", "recall", "f1", "mA", "label_mA"]
    md = (res / "ablation.md").read_text()
    assert (
        "Table 1 layout" in md and "Table 3 layout" in md and "w/o FusionFormer" in md and "14 attribute groups" in md
    )
    assert "test-selected" in md
    with Image.open(res / "ablation.png") as im:
        im.verify()
    stamps = {p: os.path.getmtime(p) for p in res.glob("runs/*/eval-test/metrics.json")}
    assert len(stamps) == 4
    run_par("ablation", store_path, "--out", res, *SWEEP, "--workers", "1")  # another worker count: same keys
    assert all(os.path.getmtime(p) == t for p, t in stamps.items())  # every point reused, none retrained
    assert json.loads((res / "ablation.json").read_text())["rows"] == data["rows"]


def test_interrupted_sweep_resumes(store_path, tmp_path, monkeypatch):
    calls = []
    real = A.evaluate_point

    def flaky(point, *args):
        calls.append(point.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(point, *args)

    monkeypatch.setattr(A, "evaluate_point", flaky)
    with pytest.raises(KeyboardInterrupt):
        A.run_ablation(str(store_path), tmp_path, [1, 2], ["fusion"], 1, None, BASE)
    first = next(tmp_path.glob(f"runs/{calls[0]}/eval-test/metrics.json"))
    stamp = os.path.getmtime(first)
    monkeypatch.setattr(A, "evaluate_point", real)
    seen = []
    rows = A.run_ablation(str(store_path), tmp_path, [1, 2], ["fusion"], 1, None, BASE,
                          on_point=lambda i, n, p, reused: seen.append(reused))
    assert seen == [True, False] and os.path.getmtime(first) == stamp and len(rows) == 2


def test_seeds_give_mean_and_std(store_path, tmp_path):
    rows = A.run_ablation(str(store_path), tmp_path, [2], ["no-text-tokens"], 2, None, BASE)
    assert rows[0]["seeds"] == 2 and rows[0]["f1_std"] >= 0 and len(rows[0]["runs"]) == 2
    assert rows[0]["runs"][0]["run"] != rows[0]["runs"][1]["run"]


@pytest.mark.parametrize("args,message", [(["--variants", "nonsense"], "unknown ablation variant"),
                                          (["--sweep-frames", "0 2"], "at least one T >= 1"),
                                          (["--sweep-frames", "two"], "ints separated by commas or spaces")])
def test_bad_sweeps_leave_nothing(store_path, tmp_path, args, message):
    proc = run_par("ablation", store_path, "--out", tmp_path / "res", "--epochs", "1", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr and not (tmp_path / "res").exists()


def test_sweep_frames_take_commas_or_spaces():
    """`par ablation --sweep-frames` reads a list as every list option does (`make bench`'s too)."""
    from par_pipeline.options import parse_numbers

    assert parse_numbers("sweep_frames", "1,2 4, 6") == [1, 2, 4, 6]


def test_report_side_by_side(store_path, run_path, tmp_path):
    from conftest import tiny_train

    tiny_train(store_path, tmp_path / "b", seed=7, epochs=1)
    run_par("eval", store_path, "--checkpoint", tmp_path / "b")  # default output: b/eval-test, which report reads
    run_par("report", run_path, tmp_path / "b", "--out", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | Precision | Recall | F1 | mA | label mA |" in md and "bottom color" in md
    assert "b: best on the test split (epoch" in md and "test-selected as the reference), par eval" in md
    assert "run: best on the test split" in md and "from training" in md
    with Image.open(tmp_path / "rep" / "report.png") as im:
        im.verify()
    with pytest.raises(ParError, match="neither a run folder"):
        from par_pipeline.workflows.report import compare_runs
        compare_runs([tmp_path], tmp_path / "rep2")


def _epochs(run) -> list[dict]:
    """log.jsonl without samples_per_s (a measurement; the rest is the run)."""
    return [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"}
            for line in (run / "log.jsonl").read_text().splitlines()]


def _same_run(a, b) -> None:
    for name in ("best.safetensors", "last.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), (a, name)
    assert _epochs(a) == _epochs(b)


FUSED = ["--sweep-frames", "1 3", "--variants", "fusion no-fusion", "--epochs", "2", "--model", "vtf-par-small",
         "--batch-size", "4", "--workers", "0", "--warmup-epochs", "1", "--fusion-init", "random"]


@pytest.fixture(scope="module")
def fused_sweep(store_path, tmp_path_factory):
    """`par ablation` whose four points (T 1 and 3, fusion and not, one seed) train side by side, and the fault
    points it passed."""
    res = tmp_path_factory.mktemp("fused") / "res"
    log = res.with_name("faults.log")
    run_par("ablation", store_path, "--out", res, *FUSED, env={"PAR_TEST_FAULT_LOG": str(log)})
    return res, log.read_text().split()


def test_a_point_of_a_fused_sweep_is_that_point_trained_alone(fused_sweep, store_path, tmp_path):
    """Every point trained side by side ends with the checkpoint and log `par train` gives it alone, bit for bit
    on a CPU (its own initialisation and DropPath draws; its frames nested prefixes of the same draw)."""
    from dataclasses import replace

    from par_pipeline.workflows.train import train

    res, _ = fused_sweep
    points = A.plan_sweep(str(store_path), res, [1, 3], ["fusion", "no-fusion"], 1, None, {
        "epochs": 2, "model": "vtf-par-small", "batch_size": 4, "workers": 0, "warmup_epochs": 1,
        "fusion_init": "random"})
    assert len(points) == 4
    for p in points:
        train(replace(p.config, out=str(tmp_path / p.key)), p.recipe)
        _same_run(res / "runs" / p.key, tmp_path / p.key)


def test_kill_9_of_a_fused_sweep_then_the_same_command(fused_sweep, store_path, tmp_path):
    """Killed when some points have committed epoch 2 and others only epoch 1: the same command resumes each from
    its own last committed epoch, and every point ends as in the uninterrupted sweep."""
    from conftest import run_par_forked

    res, points = fused_sweep
    committed = [k for k, p in enumerate(points, 1) if p == "epoch-committed"]
    assert len(committed) == 8  # 4 points x 2 epochs
    out = tmp_path / "res"
    killed = run_par_forked("ablation", store_path, "--out", out, *FUSED, env={"PAR_TEST_KILL_AT": committed[5]})
    assert killed.returncode == -9, killed.stderr[-2000:]
    epochs = sorted(len(_epochs(p)) for p in (out / "runs").iterdir())
    assert epochs == [1, 1, 2, 2]
    run_par("ablation", store_path, "--out", out, *FUSED)
    for point in (res / "runs").iterdir():
        _same_run(point, out / "runs" / point.name)
    assert json.loads((out / "ablation.json").read_text())["rows"] == \
        json.loads((res / "ablation.json").read_text())["rows"]
