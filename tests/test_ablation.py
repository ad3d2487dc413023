import csv
import json
import os

import pytest
from PIL import Image

from conftest import run_par
from par_pipeline import ablation as A
from par_pipeline.errors import ParError

BASE = {"epochs": 1, "model": "vtf-par-small", "batch_size": 4, "workers": 0, "warmup_epochs": 0}


def test_sweep_files_and_columns(store_path, tmp_path):
    proc = run_par("ablation", store_path, "--out", tmp_path / "res", "--frames", "1 2", "--variants", "fusion no-fusion",
                   "--epochs", "1", "--model", "vtf-par-small", "--batch-size", "4", "--workers", "0")
    assert "ablation.png" in proc.stdout
    res = tmp_path / "res"
    data = json.loads((res / "ablation.json").read_text())
    assert data["format"] == "par-ablation" and len(data["rows"]) == 4
    assert {(r["variant"], r["frames"]) for r in data["rows"]} == {("fusion", 1), ("fusion", 2), ("no-fusion", 1), ("no-fusion", 2)}
    rows = list(csv.DictReader(open(res / "ablation.csv")))
    assert list(rows[0])[:8] == ["variant", "frames", "seeds", "precision", "recall", "f1", "mA", "label_mA"] and len(rows) == 4
    md = (res / "ablation.md").read_text()
    assert "Table 1 layout" in md and "Table 3 layout" in md and "w/o FusionFormer" in md
    assert (res / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(res / "ablation.png") as im:
        im.verify()
    # the same command again reuses every finished run
    again = run_par("ablation", store_path, "--out", res, "--frames", "1 2", "--variants", "fusion no-fusion",
                    "--epochs", "1", "--model", "vtf-par-small", "--batch-size", "4", "--workers", "0")
    assert again.stdout.count("reused") >= 1 or json.loads((res / "ablation.json").read_text())["rows"] == data["rows"]


def test_interrupted_sweep_resumes(store_path, tmp_path, monkeypatch):
    calls = []
    real = A.run_point

    def flaky(point, on_epoch=None):
        calls.append(point.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(point, on_epoch)

    monkeypatch.setattr(A, "run_point", flaky)
    with pytest.raises(KeyboardInterrupt):
        A.run_ablation(str(store_path), tmp_path, [1, 2], ["fusion"], 1, BASE)
    first = tmp_path / "runs" / calls[0] / "eval" / "metrics.json"
    stamp = os.path.getmtime(first)
    monkeypatch.setattr(A, "run_point", real)
    seen = []
    rows = A.run_ablation(str(store_path), tmp_path, [1, 2], ["fusion"], 1, BASE,
                          on_point=lambda i, n, p, reused: seen.append(reused))
    assert seen == [True, False] and os.path.getmtime(first) == stamp and len(rows) == 2


def test_seeds_give_mean_and_std(store_path, tmp_path):
    rows = A.run_ablation(str(store_path), tmp_path, [2], ["no-text-tokens"], 2, BASE)
    assert rows[0]["seeds"] == 2 and "f1_std" in rows[0] and len(rows[0]["runs"]) == 2


def test_unknown_variant(store_path, tmp_path):
    with pytest.raises(ParError, match="unknown ablation variant"):
        A.plan_sweep(str(store_path), tmp_path, [1], ["nonsense"], 1, BASE)


def test_report_side_by_side(store_path, tmp_path):
    from par_pipeline.train import TrainConfig, train

    for name in ("a", "b"):
        train(TrainConfig(store=str(store_path), out=str(tmp_path / name), model="vtf-par-small", epochs=1, batch_size=4,
                          workers=0, warmup_epochs=0, seed=len(name) if name == "a" else 7))
    run_par("report", tmp_path / "a", tmp_path / "b", "--out", tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | Precision | Recall | F1 | mA | label mA |" in md and "| group | a | b |" in md and "bottom color" in md
    with Image.open(tmp_path / "rep" / "report.png") as im:
        im.verify()
