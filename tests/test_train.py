import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import PAR, ROOT, SMALL_TRAIN, par_env, run_par, tiny_train, train_config
from par_pipeline.errors import ParError
from par_pipeline.run import load_checkpoint
from par_pipeline.workflows.evaluate import evaluate_checkpoint
from par_pipeline.workflows.train import train

SMALL_ARGS = ["--model", "vtf-par-small", "--epochs", "3", "--batch-size", "4", "--workers", "0", "--warmup-epochs", "1",
              "--frames", "3", "--fusion-init", "random"]


def _same_weights(a_json, b_json):
    a, _ = load_checkpoint(a_json)
    b, _ = load_checkpoint(b_json)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def test_train_checkpoint_eval_and_resume(store_path, tmp_path):
    best = tiny_train(store_path, tmp_path / "run", epochs=3)
    run = tmp_path / "run"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "last.state.pt", "config.json",
                 "log.jsonl"):
        assert (run / name).is_file()
    meta = json.loads((run / "last.json").read_text())
    assert meta["format"] == "par-checkpoint" and meta["version"] == 2 and meta["epoch"] == 3
    assert meta["store_identity"]["clip_model"] == "par-tiny-clip" and meta["selected_on"] == "test"
    assert meta["recipe"]["name"] == "vtf-par-official" and meta["fusion_init"] == {"kind": "random"}
    assert len(meta["weights_sha256"]) == 64 and len(meta["state_sha256"]) == 64
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and best["f1"] > 0
    # epoch e trains at the schedule's value at t = e (1-based, as the reference steps it): with 1 warm-up epoch of 3,
    # epoch 1 is already on the cosine
    assert log[0]["lr"] == pytest.approx(2e-6 + 0.5 * (1e-3 - 2e-6) * (1 + math.cos(math.pi / 3)))
    cfg, recipe = train_config(store_path, tmp_path / "part", epochs=3)
    _stop_after(cfg, recipe, 2)
    train(cfg, recipe, resume=True)
    _same_weights(run / "last.json", tmp_path / "part" / "last.json")
    metrics = evaluate_checkpoint(str(store_path), str(run), workers=0)
    assert metrics["out"] == str(run / "eval-test") and metrics["selection"].startswith("best on the test split")
    assert set(os.listdir(run / "eval-test")) == {".par-output.json", "metrics.json", "groups.md", "groups.csv",
                                                  "predictions.npz"}
    assert len(metrics["protocol"]["groups"]) == 14 and "label_mA" in metrics["standard"]
    assert metrics["last_epoch"]["epoch"] == 3
    pred = np.load(run / "eval-test" / "predictions.npz")
    assert pred["probs"].shape == (8, 43) and pred["probs"].dtype == np.float32 and pred["labels"].dtype == np.uint8
    assert (run / "eval-test" / "groups.md").read_text().startswith("| group | precision | recall | f1 | mA | accuracy |")


def _stop_after(cfg, recipe, epochs):
    class Stop(Exception):
        pass

    def on_epoch(r):
        if r["epoch"] == epochs:
            raise Stop
    with pytest.raises(Stop):
        train(cfg, recipe, on_epoch=on_epoch)


def test_kill_9_at_ten_points_then_resume_is_identical(store_path, tmp_path):
    """kill -9 anywhere in training, inside the checkpoint commit included; `--resume` ends bit-identical (CPU)."""
    base = [*PAR, "train", str(store_path), *SMALL_ARGS]
    ref = tmp_path / "ref"
    env = par_env()
    subprocess.run([*base, "--out", str(ref)], env={**env, "PAR_TEST_FAULT_LOG": str(tmp_path / "f.log")}, check=True,
                   capture_output=True)
    points = (tmp_path / "f.log").read_text().split()
    assert {"committed", "pending:last.state.pt", "roll-forward:last.safetensors"} <= set(points)
    commit_points = [k + 1 for k, p in enumerate(points) if p.startswith(("pending:", "roll-forward:", "committed"))]
    rng = np.random.default_rng(1)
    chosen = sorted(set(rng.choice(commit_points, 6, replace=False)) |
                    set(rng.choice(np.arange(1, len(points) + 1), 4, replace=False)))
    for k in chosen:
        out = tmp_path / f"r{k}"
        killed = subprocess.run([*base, "--out", str(out)], env={**env, "PAR_TEST_KILL_AT": str(k)}, capture_output=True)
        assert killed.returncode == -signal.SIGKILL, (k, points[k - 1])
        subprocess.run([*base, "--out", str(out), "--resume"], env=env, check=True, capture_output=True)
        _same_weights(ref / "last.json", out / "last.json")
        _same_weights(ref / "best.json", out / "best.json")
        assert (out / "log.jsonl").read_text() .count("\n") == 3 and not (out / ".pending").exists()


def test_damaged_checkpoints_are_errors(run_path, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_path, run)
    w = run / "best.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 1
    w.write_bytes(bytes(data))
    with pytest.raises(ParError, match="best.safetensors: the weights file does not match the sha256"):
        load_checkpoint(run)
    state = run / "last.state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    cfg = json.loads((run / "config.json").read_text())["train"]
    proc = run_par("train", cfg["store"], "--out", run, "--config", _config_file(tmp_path, cfg), "--resume", check=False)
    assert proc.returncode == 2 and "last.state.pt: the resume state does not match the sha256" in proc.stderr


def _config_file(tmp_path, cfg):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in ("store", "recipe", "out")}))
    return path


def test_non_finite_loss_stops_with_an_error(store_path, tmp_path, monkeypatch):
    from par_pipeline.engine import step

    real = step.attribute_loss
    monkeypatch.setattr(step, "attribute_loss", lambda logits, y, r: real(logits, y, r) * float("nan"))
    with pytest.raises(ParError, match=r"the training loss became nan in epoch 1; nothing of this epoch was saved"):
        tiny_train(store_path, tmp_path / "nan")
    assert not (tmp_path / "nan").exists()  # nothing was committed: the folder this run made is gone


def test_validation_split_selects_on_held_out_persons(store_path, tmp_path):
    from par_pipeline.store.reader import TokenStore
    from par_pipeline.workflows.train import split_validation

    s = TokenStore(store_path)
    train_idx, val_idx = split_validation(s, s.indices("train"), 0.3, 0)
    assert len(val_idx) and not set(s.person_ids[train_idx]) & set(s.person_ids[val_idx])
    tiny_train(store_path, tmp_path / "v", val_fraction=0.3)
    meta = json.loads((tmp_path / "v" / "best.json").read_text())
    assert meta["selected_on"] == "val" and meta["val_metrics"] is not None
    log = [json.loads(line) for line in (tmp_path / "v" / "log.jsonl").read_text().splitlines()]
    assert meta["epoch"] == max(log, key=lambda r: r["val_f1"])["epoch"]


def test_recipe_needs_fusion_init_and_options_are_checked(store_path, tmp_path):
    proc = run_par("train", store_path, "--out", tmp_path / "a", "--model", "vtf-par-small", check=False)
    assert proc.returncode == 2 and "pass --fusion-init" in proc.stderr and "--fusion-init random" in proc.stderr
    (tmp_path / "bad.json").write_text(json.dumps({"epochs": "three"}))
    proc = run_par("train", store_path, "--out", tmp_path / "b", "--config", tmp_path / "bad.json", check=False)
    assert proc.returncode == 2 and "'epochs' must be int" in proc.stderr
    (tmp_path / "unknown.json").write_text(json.dumps({"epoks": 3}))
    proc = run_par("train", store_path, "--out", tmp_path / "c", "--config", tmp_path / "unknown.json", check=False)
    assert proc.returncode == 2 and "unknown option 'epoks'" in proc.stderr
    for args, message in ((["--lr", "-1"], "'lr' must be greater than 0"), (["--frames", "0"], "'frames' must be at least 1"),
                          (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device")):
        proc = run_par("train", store_path, "--out", tmp_path / "d", *SMALL_ARGS, *args, check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json", "unknown.json"]


def test_resume_compares_only_what_changes_results(store_path, tmp_path):
    cfg, recipe = train_config(store_path, tmp_path / "r", epochs=2)
    _stop_after(cfg, recipe, 1)
    proc = run_par("train", store_path, "--out", tmp_path / "r", *SMALL_ARGS[:-4], "--epochs", "2", "--frames", "3",
                   "--fusion-init", "random", "--resume", "--workers", "1", check=False)
    assert proc.returncode == 0, proc.stderr  # workers do not change results
    proc = run_par("train", store_path, "--out", tmp_path / "r", *SMALL_ARGS, "--resume", "--lr", "0.01", check=False)
    assert proc.returncode == 2 and "different options" in proc.stderr and "lr" in proc.stderr


def test_training_leaves_process_state_alone(store_path, tmp_path):
    torch.manual_seed(123)
    before_rng = torch.get_rng_state()
    torch.use_deterministic_algorithms(False)
    tiny_train(store_path, tmp_path / "s", epochs=1)
    assert torch.equal(torch.get_rng_state(), before_rng) and not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("variant", [{"temporal": "attention-pool"}, {"temporal": "transformer"}, {"fusion": False}])
def test_variants_train_and_evaluate(store_path, tmp_path, variant):
    tiny_train(store_path, tmp_path / "v", epochs=1, **variant)
    metrics = evaluate_checkpoint(str(store_path), str(tmp_path / "v"), workers=0)
    assert 0 <= metrics["protocol"]["mean"]["f1"] <= 1


def test_training_draws_stored_views(manifest_path, tmp_path):
    """With several stored views, training rows are views drawn per (seed, epoch, tracklet); evaluation reads view 0."""
    from conftest import tiny_extract
    from par_pipeline.data.manifest import read_manifest
    from par_pipeline.engine.tokens import EVAL, TrackletTokens

    store = tmp_path / "v.zarr"
    tiny_extract(read_manifest(manifest_path), store, views=4)
    ds = TrackletTokens(str(store), 3, seed=0, use_views=True)
    s = ds.store
    i = int(s.indices("train")[0])
    rows = np.concatenate([ds.picked_rows(i, e) for e in range(20)])
    assert set(((rows - s.offsets[i]) % 4).tolist()) == {0, 1, 2, 3}
    assert np.array_equal(ds.picked_rows(i, 5), ds.picked_rows(i, 5))
    assert ((ds.picked_rows(i, EVAL) - s.offsets[i]) % 4 == 0).all()
    tiny_train(store, tmp_path / "run", epochs=1)


def test_ddp_gradients_match_single_process():
    """2 gloo ranks, each half of the global batch, BatchNorm statistics over both: gradients equal one process's
    within float32 reduction error (stated tolerance: 1e-3 of the largest gradient)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           str(ROOT / "tests" / "ddp_grad_check.py")], env=par_env({"OMP_NUM_THREADS": "1"}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_ddp_training_matches_single(store_path, tmp_path):
    """The same run under torchrun: after 2 epochs the models agree. Adam turns float-order differences of near-zero
    gradients into up to an lr-sized step, so the stated tolerance is on predictions: 0.05 in probability."""
    single = tmp_path / "single"
    tiny_train(store_path, single, epochs=2, drop_path=0.0)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           "-m", "cli.main", "train", str(store_path), "--out", str(tmp_path / "ddp"), *SMALL_ARGS,
                           "--epochs", "2", "--drop-path", "0"],
                          env=par_env({"OMP_NUM_THREADS": "1"}), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = evaluate_checkpoint(str(store_path), str(single / "last.json"), str(tmp_path / "ea"), workers=0)
    b = evaluate_checkpoint(str(store_path), str(tmp_path / "ddp" / "last.json"), str(tmp_path / "eb"), workers=0)
    pa, pb = np.load(tmp_path / "ea" / "predictions.npz")["probs"], np.load(tmp_path / "eb" / "predictions.npz")["probs"]
    assert np.abs(pa - pb).max() <= 0.05
    assert abs(a["protocol"]["mean"]["f1"] - b["protocol"]["mean"]["f1"]) <= 0.05


def test_cli_end_to_end_hdf5(tmp_path):
    """synth -> manifest -> extract (HDF5) -> train -> eval through the real CLI."""
    run_par("synth", tmp_path / "d", "--tracklets", "6", "--frames-per-tracklet", "3", "--workers", "1")
    run_par("manifest", "mars", tmp_path / "d", "--out", tmp_path / "m.jsonl")
    run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.h5", "--clip-model", "par-tiny-clip",
            "--allow-random-init", "--precision", "fp32", "--workers", "1")
    out = run_par("train", tmp_path / "s.h5", "--out", tmp_path / "run", *SMALL_ARGS, "--epochs", "1")
    assert "selected epoch 1 (test-selected)" in out.stdout
    ev = run_par("eval", tmp_path / "s.h5", "--checkpoint", tmp_path / "run", "--baseline")
    assert "majority-value baseline" in ev.stdout and "age" in ev.stdout
    again = run_par("train", tmp_path / "s.h5", "--out", tmp_path / "run", *SMALL_ARGS, check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
    run_par("verify", tmp_path / "s.h5")
