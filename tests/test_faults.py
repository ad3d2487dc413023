"""Bad input and faults, table-driven: each ends in ONE line `error: ...` on stderr with exit code 2, leaves no
output behind, and leaves every input as it was. The CLI runs in-process (its own error mapping); the two disk-full
cases run as real processes, because the file-size limit is the process's."""
import os
import re
from pathlib import Path

import pytest

from conftest import TINY, TRAIN, digest, one_error_line, run_par, run_par_forked

# (id, args with {store} {manifest} {run} {tmp} {root} placeholders, message regex, outputs that must not exist, setup)
CASES = [
    (
        "eval-frames-0",
        ["eval", "{store}", "--checkpoint", "{run}", "--out", "{tmp}/ev", "--frames", "0"],
        r"--frames must be at least 1, got 0",
        ["{tmp}/ev"],
        None,
    ),
    (
        "eval-split-bogus",
        ["eval", "{store}", "--checkpoint", "{run}", "--out", "{tmp}/ev", "--split", "bogus"],
        r"no split 'bogus' in this store; it has \['test', 'train'\]",
        ["{tmp}/ev"],
        None,
    ),
    (
        "eval-sampling-bogus",
        ["eval", "{store}", "--checkpoint", "{run}", "--out", "{tmp}/ev", "--sampling", "often"],
        r"--sampling must be one of \['fixed', 'random'\], not 'often'",
        ["{tmp}/ev"],
        None,
    ),
    (
        "eval-threshold",
        ["eval", "{store}", "--checkpoint", "{run}", "--out", "{tmp}/ev", "--threshold", "1.5"],
        r"--threshold must be at most 1, got 1.5",
        ["{tmp}/ev"],
        None,
    ),
    (
        "extract-format-bogus",
        ["extract", "{manifest}", "--out", "{tmp}/s.zarr", *TINY, "--format", "bogus"],
        r"--format must be one of \['zarr', 'h5'\]",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        None,
    ),
    (
        "extract-batch-0",
        ["extract", "{manifest}", "--out", "{tmp}/s.zarr", *TINY, "--batch-size", "0"],
        r"--batch-size must be at least 1",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        None,
    ),
    (
        "extract-max-frames-0",
        ["extract", "{manifest}", "--out", "{tmp}/s.zarr", *TINY, "--max-frames-per-tracklet", "0"],
        r"--max-frames-per-tracklet must be at least 1",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        None,
    ),
    (
        "extract-mean-text",
        ["extract", "{manifest}", "--out", "{tmp}/s.zarr", *TINY, "--mean", "half"],
        r"--mean takes floats separated by commas or spaces, not 'half'",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        None,
    ),
    (
        "extract-no-gpu",
        ["extract", "{manifest}", "--out", "{tmp}/s.zarr", *TINY, "--device", "cuda:7"],
        r"--device cuda:7: (CUDA is not available|this machine has)",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        None,
    ),
    (
        "extract-h5-name",
        ["extract", "{manifest}", "--out", "{tmp}/s.zarr", *TINY, "--format", "h5"],
        r"an HDF5 store needs a .h5 or .hdf5 file name",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        None,
    ),
    (
        "extract-bad-manifest",
        ["extract", "{tmp}/short.jsonl", "--out", "{tmp}/s.zarr", *TINY],
        r"short.jsonl:2 \(tracklet \S+\): expected 43 labels",
        ["{tmp}/s.zarr", "{tmp}/s.zarr.partial"],
        "short_manifest",
    ),
    ("synth-zero", ["synth", "{tmp}/d", "--tracklets", "0"], r"--tracklets must be at least 1", ["{tmp}/d"], None),
    ("synth-frames", ["synth", "{tmp}/d", "--frames-per-tracklet", "5-2"], r"need 1 <= MIN <= MAX", ["{tmp}/d"], None),
    (
        "synth-frames-text",
        ["synth", "{tmp}/d", "--frames-per-tracklet", "many"],
        r"--frames-per-tracklet must be N or MIN-MAX, not 'many'",
        ["{tmp}/d"],
        None,
    ),
    # `frames` names the nuisance file beside the layouts' files, not a layout
    (
        "synth-layout",
        ["synth", "{tmp}/d", "--layout", "frames"],
        r"--layout must be one of \['mars', 'duke'\]",
        ["{tmp}/d"],
        None,
    ),
    (
        "train-unknown-model",
        ["train", "{store}", "--out", "{tmp}/r", *TRAIN, "--model", "nosuch"],
        r"unknown model 'nosuch': give one of \['vtf-par', 'vtf-par-small'\]",
        ["{tmp}/r"],
        None,
    ),
    (
        "train-model-typo",
        ["train", "{store}", "--out", "{tmp}/r", *TRAIN, "--model", "{tmp}/typo.json"],
        r"typo.json: unknown key\(s\) \['hiden'\]",
        ["{tmp}/r"],
        "typo_model",
    ),
    (
        "train-out-under-file",
        ["train", "{store}", "--out", "{tmp}/afile/run", *TRAIN],
        r"afile/run: cannot create",
        ["{tmp}/afile/run"],
        "a_file",
    ),
    (
        "manifest-out-under-file",
        ["manifest", "mars", "{root}", "--out", "{tmp}/afile/m.jsonl"],
        r"afile/m.jsonl: cannot write",
        [],
        "a_file",
    ),
    (
        "report-out-under-file",
        ["report", "{run}", "--out", "{tmp}/afile/rep"],
        r"afile/rep: cannot write",
        [],
        "a_file",
    ),
    (
        "eval-disk-full",
        ["eval", "{store}", "--checkpoint", "{run}", "--out", "{tmp}/ev"],
        r"ev: cannot write \(File too large\)",
        ["{tmp}/ev"],
        "disk_full",
    ),
    (
        "train-disk-full",
        ["train", "{store}", "--out", "{tmp}/r", *TRAIN],
        r"r/\.pending/\S+: cannot write \(File too large\)",
        ["{tmp}/r"],
        "disk_full",
    ),
    ("predict-no-input", ["predict", "--checkpoint", "{run}"], r"nothing to predict", [], None),
    (
        "predict-frames-0",
        ["predict", "{root}/bbox_test", "--checkpoint", "{run}", "--frames", "0"],
        r"--frames must be at least 1",
        [],
        None,
    ),
    ("verify-nothing", ["verify", "{tmp}/nothere.zarr"], r"nothere.zarr: token store not found", [], None),
    (
        "ablation-bad-variant",
        ["ablation", "{store}", "--out", "{tmp}/res", "--variants", "fusion nonsense"],
        r"unknown ablation variant\(s\) \['nonsense'\]",
        ["{tmp}/res"],
        None,
    ),
    (
        "train-config-type",
        ["train", "{store}", "--out", "{tmp}/r", "--config", "{tmp}/cfg.json"],
        r"cfg.json: 'frames' must be int",
        ["{tmp}/r"],
        "bad_config",
    ),
    (
        "bench-config-type",
        ["bench", "--out", "{tmp}/b", "--config", "{tmp}/cfg.json"],
        r"cfg.json: 'frames_per_tracklet' must be int",
        ["{tmp}/b"],
        "bad_bench_config",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fault(case, store_path, manifest_path, run_path, synth_root, tmp_path):
    name, args, pattern, absent, setup = case
    fill = {"store": str(store_path), "manifest": str(manifest_path), "run": str(run_path), "tmp": str(tmp_path),
            "root": str(synth_root)}
    if setup == "short_manifest":
        lines = manifest_path.read_text().splitlines()
        lines[1] = lines[1].replace('"labels":[', '"labels":[0,', 1)
        (tmp_path / "short.jsonl").write_text("\n".join(lines[:3]) + "\n")
    elif setup == "a_file":
        (tmp_path / "afile").write_text("not a folder")
    elif setup == "bad_config":
        (tmp_path / "cfg.json").write_text('{"frames": 2.5}')
    elif setup == "bad_bench_config":
        (tmp_path / "cfg.json").write_text('{"frames_per_tracklet": 2.5}')
    elif setup == "typo_model":
        (tmp_path / "typo.json").write_text('{"name": "typo", "hiden": 64, "hidden": 64, "depth": 1, "heads": 4, '
                                            '"mlp_ratio": 4.0, "qkv_bias": true, "head_batchnorm": true}')
    inputs = [Path(p) for p in (store_path, manifest_path, run_path)]
    before = {p: digest(p) for p in inputs}
    argv = [a.format(**fill) for a in args]
    if setup == "disk_full":
        result = run_par_forked(*argv, file_size_limit=4096)  # writes past it fail with EFBIG (disk "full")
    else:
        result = run_par(*argv, check=False)
    line = one_error_line(result)
    assert re.search(pattern, line), (name, line)
    for p in absent:
        assert not os.path.exists(p.format(**fill)), (name, p)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [], (name, leftovers)
    assert {p: digest(p) for p in inputs} == before, name


def test_what_a_killed_process_left_is_cleared_and_nothing_else(tmp_path):
    """replace_dir and atomic_write remove the temp siblings of dead par processes (kill -9 leaves them), and keep a
    running process's and anything not named as par names them."""
    import subprocess

    from par_pipeline.outputs import _HOST, atomic_write, replace_dir

    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = os.getppid()
    final = tmp_path / "rep"
    stale = [tmp_path / f".rep.tmp-{dead.pid}", tmp_path / f".rep.old-{dead.pid}",  # earlier par versions' names
             tmp_path / f".rep.tmp-{_HOST}-{dead.pid}-x1y2z3", tmp_path / f".rep.old-{_HOST}-{dead.pid}-0a1b2c3d"]
    kept = [tmp_path / f".rep.tmp-{alive}", tmp_path / ".rep.tmp-mine", tmp_path / f".report.tmp-{dead.pid}",
            tmp_path / f".rep.tmp-{_HOST}-{alive}-abc", tmp_path / f".rep.tmp-otherhost-{dead.pid}-abc"]
    for p in stale + kept:
        p.mkdir()
        (p / "x").write_text("x")
    replace_dir(final, "report", lambda folder: (folder / "report.md").write_text("r"))
    assert (final / "report.md").read_text() == "r"
    assert not any(p.exists() for p in stale) and all((p / "x").exists() for p in kept)
    (tmp_path / f".f.json.tmp-{dead.pid}").write_text("half")
    atomic_write(tmp_path / "f.json", lambda tmp: tmp.write_text("{}"))
    assert not (tmp_path / f".f.json.tmp-{dead.pid}").exists() and (tmp_path / "f.json").read_text() == "{}"


def test_a_folder_output_s_own_temp_files_are_not_the_user_s(tmp_path):
    """A par folder output that a killed write left a temp file in (`.tracks.json.tmp-<host>-<pid>-<random>`) may
    still be replaced or continued; a file of anyone else's in it, hidden or not, still refuses it."""
    from par_pipeline.errors import ParError
    from par_pipeline.outputs import _HOST, check_dir_target, mark_own

    out = tmp_path / "o"
    out.mkdir()
    mark_own(out, "live tracks", ["tracks.json", "tracks.jsonl"])
    (out / "tracks.json").write_text("{}")
    (out / f".tracks.json.tmp-{_HOST}-4242-k3j_x9ab").write_text("half")
    (out / ".tracks.json.tmp-4242").write_text("half")  # an earlier par version's name
    check_dir_target(out, "live tracks")
    for theirs in (".DS_Store", "notes.txt", ".tracks.json.backup"):
        (out / theirs).write_text("mine")
        with pytest.raises(ParError, match="holds files par did not write"):
            check_dir_target(out, "live tracks")
        (out / theirs).unlink()
