"""`par bench` and scripts/gpu_check.sh run end to end on tiny sizes and write every documented figure (no timing
is asserted: performance figures come from `make bench`, never from tests)."""
import json
import os
import subprocess

from conftest import ROOT, par_env, run_par


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench"
    proc = run_par("bench", "--out", out, "--clip-model", "par-tiny-clip", "--tracklets", "4", "--frames-per-tracklet",
                   "4", "--batch-size", "8", "--workers", "1", "--fusion-model", "vtf-par-small", "--train-batch", "2",
                   "--epochs", "2", "--sweep-epochs", "1", "--sweep-frames", "1 2", "--host-frames", "256")
    assert "pipeline / model-only" in proc.stdout and "sweep speedup" in proc.stdout
    data = json.loads((out / "bench.json").read_text())
    e, t, p, s = data["extract"], data["train"], data["predict"], data["sweep"]
    assert e["raw_floor_bytes"] == 2 * 197 * 512 and e["bytes_over_floor"] <= 1.02
    assert e["int8_bytes_per_frame"] / e["raw_floor_bytes"] <= 0.51
    assert e["chunks"] == [1, 197, 512] and e["pipeline_fps"] > 0 and e["model_only_fps"] > 0
    assert e["dtype_vs_fp32"]["int8"]["min_token_cosine"] >= 0.999 and "bf16" in e["precision_vs_fp32"]
    assert t["store_samples_per_s"] > 0 and t["loader_cold_samples_per_s"] > 0 and t["int8_loader_warm_samples_per_s"] > 0
    assert t["disk_random_read"]["one_at_a_time_rows_per_s"] > 0 and t["checksum_verification"]["ms_per_row_verify_always"] > 0
    assert p["tracklets"] == 4 and set(s["reference_s"]) == {"1", "2"} and s["projected_speedup"] > 0
    for dtype in ("float16", "int8"):
        host = e["host_loop"][dtype]
        assert host["frames"] > 0 and host["direct"]["frames_per_s"] > 0 and host["zarr"]["frames_per_s"] > 0


def test_gpu_check_script_runs_as_written_on_a_cpu(tmp_path):
    """scripts/gpu_check.sh, with its sizes shrunk through its variables and the device set to the CPU."""
    env = par_env({"OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "DEVICE": "cpu", "CLIP": "par-tiny-clip",
                   "FUSION": "vtf-par-small", "TRACKLETS": "3", "FRAMES": "3", "BATCH": "8", "TRAIN_BATCH": "2",
                   "EPOCHS": "2", "HOST_FRAMES": "128", "PRECISIONS": "fp32",
                   "PY": str(ROOT / ".venv" / "bin" / "python"), "PATH": os.environ["PATH"]})
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "extract_fp32_torchvision" in proc.stdout and "loader warm" in proc.stdout and "predict" in proc.stdout
