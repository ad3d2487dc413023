import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, run_par
from par_pipeline.checkpoint import load_checkpoint
from par_pipeline.errors import ParError
from par_pipeline.evaluate import evaluate_checkpoint
from par_pipeline.model import VTFPAR, ModelConfig, load_fusion_init
from par_pipeline.samples import sample_frames
from par_pipeline.train import TrainConfig, train


def small_cfg(store, out, **kw):
    base = dict(store=str(store), out=str(out), model="vtf-par-small", epochs=2, batch_size=4, workers=0, warmup_epochs=1,
                frames=3)
    base.update(kw)
    return TrainConfig(**base)


def test_model_shapes_and_heads():
    cfg = ModelConfig(hidden=64, heads=4, num_attributes=5, input_dim=32)
    m = VTFPAR(cfg, torch.randn(5, 32)).eval()
    assert m(torch.randn(3, 197, 32)).shape == (3, 5)
    nf = VTFPAR(ModelConfig(hidden=64, heads=4, num_attributes=5, input_dim=32, fusion=False), torch.randn(5, 32)).eval()
    assert nf(torch.randn(3, 197, 32)).shape == (3, 5) and not hasattr(nf, "blocks")


def test_fusion_init_from_timm_like_checkpoint(tmp_path):
    from safetensors.torch import save_file

    cfg = ModelConfig(hidden=64, heads=4, num_attributes=5, input_dim=32)
    m = VTFPAR(cfg, torch.randn(5, 32))
    blk = {f"blocks.{i}.{k}": torch.full_like(v, float(i)) for i in range(3) for k, v in m.blocks[0].state_dict().items()}
    save_file(blk, str(tmp_path / "vit.safetensors"))
    load_fusion_init(m, tmp_path / "vit.safetensors")
    assert torch.all(m.blocks[0].attn.qkv.weight == 2.0)  # the LAST block (2)
    wrong = {k: (v[..., :1] if v.dim() > 1 else v).contiguous() for k, v in blk.items()}
    save_file(wrong, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ParError, match="bad.safetensors: blocks.2.*fusion block needs"):
        load_fusion_init(m, tmp_path / "bad.safetensors")


def test_sample_frames_rules():
    rng = np.random.default_rng(0)
    picked = sample_frames(10, 6, rng)
    assert len(set(picked)) == 6  # without replacement
    assert len(sample_frames(3, 6, rng)) == 6  # with replacement when short
    assert sample_frames(7, 4, None).tolist() == [0, 2, 4, 6]  # evaluation: evenly spaced


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16])
def test_batches_are_float32_means_of_the_picked_frames(store_path, out_dtype):
    """Whole-batch loading (workers, shared memory) gives exactly mean_t(tokens) taken in float32, then cast;
    training picks are keyed by (seed, epoch, tracklet), evaluation picks are evenly spaced."""
    from par_pipeline.samples import EpochBatches, TrackletTokens, tracklet_batches
    from par_pipeline.store import TokenStore

    store = TokenStore(store_path)
    ds = TrackletTokens(str(store_path), 4, seed=5, out_dtype=out_dtype)
    keys = [(i, 2) for i in range(len(store))] + [(i, -1) for i in range(len(store))]
    x, y, index = ds.__getitems__(keys)
    for b, (i, epoch) in enumerate(keys):
        rows = store.valid_rows(i)
        rng = np.random.default_rng([5, epoch, i]) if epoch >= 0 else None
        expected = torch.from_numpy(np.stack([np.asarray(store.tokens[int(r)]) for r in rows[sample_frames(len(rows), 4, rng)]]))
        assert torch.equal(x[b], expected.float().mean(0).to(out_dtype)) and x.dtype == out_dtype
        assert torch.equal(y[b], torch.from_numpy(store.labels[i].astype(np.float32))) and int(index[b]) == i
    # the same batches through 2 worker processes
    loader = tracklet_batches(ds, EpochBatches(np.arange(len(store)), 5, seed=1, shuffle=False), workers=2, pin_memory=False)
    got = torch.cat([xb for xb, _, _ in loader])
    assert torch.equal(got, x[len(store):])


def test_train_checkpoint_eval_and_resume(store_path, tmp_path):
    best = train(small_cfg(store_path, tmp_path / "run", epochs=3))
    run = tmp_path / "run"
    for name in ("best.safetensors", "best.json", "last.safetensors", "last.json", "config.json", "log.jsonl"):
        assert (run / name).is_file()
    meta = json.loads((run / "last.json").read_text())
    assert meta["format"] == "par-checkpoint" and meta["epoch"] == 3 and meta["store_identity"]["model"] == "par-tiny-clip"
    assert len((run / "log.jsonl").read_text().splitlines()) == 3 and best["f1"] > 0
    # resume: 2 epochs, then resume to 3 == uninterrupted 3 epochs, bit for bit (CPU)
    cfg2 = small_cfg(store_path, tmp_path / "part", epochs=3)
    _train_epochs(cfg2, stop_after=2)
    train(cfg2, resume=True)
    a, _ = load_checkpoint(run / "last.json")
    b, _ = load_checkpoint(tmp_path / "part" / "last.json")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    # eval writes every documented file and key
    metrics = evaluate_checkpoint(str(store_path), str(run), str(tmp_path / "eval"), workers=0)
    assert set(os.listdir(tmp_path / "eval")) == {"metrics.json", "groups.md", "groups.csv", "predictions.npz"}
    assert len(metrics["protocol"]["groups"]) == 14 and "label_mA" in metrics["standard"]
    pred = np.load(tmp_path / "eval" / "predictions.npz")
    assert pred["probs"].shape == (8, 43) and pred["probs"].dtype == np.float32 and pred["labels"].dtype == np.uint8
    assert ((pred["probs"] >= 0) & (pred["probs"] <= 1)).all() and len(pred["tracklets"]) == 8
    assert (tmp_path / "eval" / "groups.md").read_text().startswith("| group | precision | recall | f1 | mA | accuracy |")


def _train_epochs(cfg, stop_after):
    """Run a training that is cut after `stop_after` epochs (as an interrupted run)."""
    class Stop(Exception):
        pass

    def on_epoch(r):
        if r["epoch"] == stop_after:
            raise Stop
    with pytest.raises(Stop):
        train(cfg, on_epoch=on_epoch)


def test_checkpoint_refuses_other_store(store_path, manifest_path, tmp_path):
    from conftest import tiny_extract_config
    from par_pipeline.extract import extract
    from par_pipeline.manifest import read_manifest

    train(small_cfg(store_path, tmp_path / "run", epochs=1))
    other = tmp_path / "other.zarr"
    extract(read_manifest(manifest_path), tiny_extract_config(other, seed=3))
    with pytest.raises(ParError, match="different weights"):
        evaluate_checkpoint(str(other), str(tmp_path / "run"), str(tmp_path / "eval"), workers=0)
    assert not (tmp_path / "eval").exists()
    (tmp_path / "run" / "best.safetensors").write_bytes(b"garbage")
    with pytest.raises(ParError, match="cannot read checkpoint weights"):
        load_checkpoint(tmp_path / "run")


def test_ddp_gradients_match_single_process():
    """2 gloo ranks, each half of the global batch, BatchNorm statistics over both: gradients equal one process's
    within float32 reduction error (stated tolerance: 1e-3 of the largest gradient)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           str(ROOT / "tests" / "ddp_grad_check.py")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_ddp_training_matches_single(store_path, tmp_path):
    """The same run under torchrun: after 2 epochs the models agree. Adam turns float-order differences of near-zero
    gradients into up to an lr-sized step, so the stated tolerance is on predictions: 0.05 in probability."""
    single = tmp_path / "single"
    train(small_cfg(store_path, single, epochs=2, batch_size=4))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           "-m", "cli.main", "train", str(store_path), "--out", str(tmp_path / "ddp"), "--model", "vtf-par-small",
                           "--epochs", "2", "--batch-size", "4", "--workers", "0", "--warmup-epochs", "1", "--frames", "3"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = evaluate_checkpoint(str(store_path), str(single / "last.json"), str(tmp_path / "ea"), workers=0)
    b = evaluate_checkpoint(str(store_path), str(tmp_path / "ddp" / "last.json"), str(tmp_path / "eb"), workers=0)
    pa, pb = np.load(tmp_path / "ea" / "predictions.npz")["probs"], np.load(tmp_path / "eb" / "predictions.npz")["probs"]
    assert np.abs(pa - pb).max() <= 0.05
    assert abs(a["protocol"]["mean"]["f1"] - b["protocol"]["mean"]["f1"]) <= 0.05


def test_cli_end_to_end(tmp_path):
    """synth -> manifest -> extract -> train -> eval through the real CLI."""
    run_par("synth", tmp_path / "d", "--tracklets", "6", "--frames", "3", "--workers", "1")
    run_par("manifest", "mars", tmp_path / "d", "--out", tmp_path / "m.jsonl")
    run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.h5", "--model", "par-tiny-clip", "--allow-random-init",
            "--workers", "1")
    out = run_par("train", tmp_path / "s.h5", "--out", tmp_path / "run", "--model", "vtf-par-small", "--epochs", "1",
                  "--batch-size", "4", "--workers", "0")
    assert "best F1" in out.stdout
    ev = run_par("eval", tmp_path / "s.h5", "--checkpoint", tmp_path / "run", "--out", tmp_path / "ev", "--baseline")
    assert "majority-value baseline" in ev.stdout and "age" in ev.stdout
    again = run_par("train", tmp_path / "s.h5", "--out", tmp_path / "run", "--model", "vtf-par-small", "--epochs", "1",
                    "--workers", "0", check=False)
    assert again.returncode == 2 and "--resume" in again.stderr
