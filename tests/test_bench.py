"""`par bench` runs end to end on tiny sizes and writes every documented figure (no timing is asserted)."""
import json

from conftest import run_par


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench"
    proc = run_par("bench", "--out", out, "--model", "par-tiny-clip", "--tracklets", "4", "--frames", "4", "--batch-size", "8",
                   "--workers", "1", "--fusion-model", "vtf-par-small", "--train-batch", "2", "--epochs", "2",
                   "--sweep-epochs", "1", "--sweep-frames", "1 2")
    assert "pipeline / model-only" in proc.stdout and "sweep speedup" in proc.stdout
    data = json.loads((out / "bench.json").read_text())
    e, t, p, s = data["extract"], data["train"], data["predict"], data["sweep"]
    assert e["raw_floor_bytes"] == 2 * 197 * 512 and e["bytes_over_floor"] <= 1.02
    assert e["chunks"] == [1, 197, 512] and e["pipeline_fps"] > 0 and e["model_only_fps"] > 0
    assert t["store_samples_per_s"] > 0 and p["tracklets"] == 4 and set(s["reference_s"]) == {"1", "2"}
    assert s["projected_speedup"] > 0
    host = e["host_loop"]
    assert host["frames"] > 0 and host["direct"]["frames_per_s"] > 0 and host["zarr"]["frames_per_s"] > 0
