"""scripts/gpu_check.sh runs end to end on tiny sizes (no timing is asserted: performance figures come from `make
bench` and the script itself, never from tests). `make bench` is run and checked in test_makefile."""
import os
import subprocess

from conftest import ROOT, par_env


def test_gpu_check_script_runs_as_written_on_a_cpu(tmp_path):
    """scripts/gpu_check.sh, with its sizes shrunk through its variables and the device set to the CPU (one decoder:
    PIL decoding is `make bench`'s default, tested with the Makefile)."""
    env = par_env({"OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "DEVICE": "cpu",
                   "CLIP": "par-tiny-clip", "FUSION": "vtf-par-small", "TRACKLETS": "3", "FRAMES": "3", "BATCH": "8",
                   "TRAIN_BATCH": "2", "STEP_MODES": "eager,compile", "EPOCHS": "2", "HOST_FRAMES": "128",
                   "PRECISIONS": "fp32",
                   "DECODERS": "torchvision",
                   "TRACK_SECONDS": "3", "TRACK_MINUTES": "0.1", "PY": str(ROOT / ".venv" / "bin" / "python"),
                   "WHEELS": str(tmp_path / "no-wheels"),
                   "PATH": os.environ["PATH"]})
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "extract_fp32_torchvision" in proc.stdout and "loader warm" in proc.stdout and "predict" in proc.stdout
    assert "par's tokens (forward_intermediates + proj)" in proc.stdout and "TFLOP/s" in proc.stdout
    assert "video frames/s" in proc.stdout and "model-only step: eager" in proc.stdout and ", compile " in proc.stdout
