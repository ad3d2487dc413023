import csv
import re
import shutil

import numpy as np
import pytest

from conftest import needs_shared, run_par
from par_pipeline.data.layouts import build_duke_manifest, mars_frame_counts, read_attribute_csv, read_mars_info
from par_pipeline.data.manifest import read_manifest, write_manifest
from par_pipeline.data.schema import load_schema
from par_pipeline.errors import ParError


def csv_labels(path, schema):
    return {f"{k[0]:04d}C{k[1]}T{k[2]:04d}": v[0].tolist() for k, v in read_attribute_csv(path, schema).items()}


def test_synth_then_manifest_reproduces_labels(synth_root, manifest_path):
    m = read_manifest(manifest_path)
    expected = csv_labels(synth_root / "mars_attributes.csv", load_schema("mars"))
    assert {r.tracklet: r.labels for r in m.records} == expected
    assert len(m.split("train")) == 8 and len(m.split("test")) == 8
    for r in m.records:
        assert r.frames == sorted(r.frames) and all((synth_root / f).is_file() for f in r.frames)
        assert r.frames[0].startswith("bbox_train/" if r.split == "train" else "bbox_test/")


def test_manifest_round_trip(manifest_path, tmp_path):
    m = read_manifest(manifest_path)
    write_manifest(m, tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_text() == manifest_path.read_text()
    header = manifest_path.read_text().splitlines()[0]
    assert '"format": "par-manifest"' in header and '"group_boundaries": [0, 1, 2' in header


def test_synth_is_deterministic(tmp_path):
    from par_pipeline.tools.synth import plan_random, write_synth

    for name in ("a", "b"):
        write_synth(tmp_path / name, plan_random("mars", 2, (2, 3), seed=5), workers=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def _copy(synth_root, tmp_path):
    root = tmp_path / "mars"
    shutil.copytree(synth_root, root)
    return root


def _rewrite_csv(root, edit):
    path = root / "mars_attributes.csv"
    rows = list(csv.reader(open(path)))
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.mark.parametrize("case,pattern", [
    ("missing_folder", r"bbox_test: MARS bbox_test folder not found"),
    ("missing_csv", r"no mars_attributes.csv found in the dataset root; pass the annotation with --attributes"),
    ("renamed_column", r"mars_attributes.csv: missing column\(s\) \['top color'\]"),
    ("out_of_range", r"mars_attributes.csv:2: column 'age' has value 7, outside 0..3"),
    ("duplicate", r"mars_attributes.csv:\d+: duplicate tracklet row person"),
])
def test_manifest_bad_inputs(synth_root, tmp_path, case, pattern):
    root = _copy(synth_root, tmp_path)
    if case == "missing_folder":
        shutil.rmtree(root / "bbox_test")
    elif case == "missing_csv":
        (root / "mars_attributes.csv").unlink()
    elif case == "renamed_column":
        _rewrite_csv(root, lambda r: [[("top colour" if c == "top color" else c) for c in r[0]], *r[1:]])
    elif case == "out_of_range":
        def bad_age(rows):
            rows[1][rows[0].index("age")] = "7"
            return rows
        _rewrite_csv(root, bad_age)
    elif case == "duplicate":
        _rewrite_csv(root, lambda r: [*r, r[1]])
    out = tmp_path / "m.jsonl"
    proc = run_par("manifest", "mars", root, "--out", out, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    import re
    assert re.search(pattern, " ".join(lines)), proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".m.jsonl*"))


def test_manifest_cli_summary(synth_root, tmp_path):
    proc = run_par("manifest", "mars", synth_root, "--out", tmp_path / "m.jsonl")
    assert "train" in proc.stdout and "labelled tracklets without frames" in proc.stdout
    assert len(read_manifest(tmp_path / "m.jsonl").records) == 16


def test_duke_layout(tmp_path):
    """A Duke-shaped tree: tracklet ids number train first, then gallery; query repeats are counted once."""
    from PIL import Image

    root = tmp_path / "duke"
    layout = [("train", 1, "0001", 2), ("train", 1, "0002", 5), ("train", 8, "0001", 1), ("gallery", 2, "0001", 1),
              ("query", 2, "0001", 1)]
    for folder, pid, trk, cam in layout:
        d = root / folder / f"{pid:04d}" / trk
        d.mkdir(parents=True)
        for f in range(1, 3):
            Image.new("RGB", (64, 128)).save(d / f"{pid:04d}_C{cam}_F{f:04d}_X0000{f}.jpg")
    header = [
        "person_id",
        "camera_id",
        "tracklets_id",
        "motion",
        "pose",
        "occlusion",
        "cut-out",
        "muti-person",
        "background-dominant",
        "target-change",
        "target-miss",
        "wrong-target",
        "backpack",
        "bag",
        "handbag",
        "boots",
        "gender",
        "hat",
        "shoes",
        "top",
        "bottom color",
        "top color",
    ]
    rows = [[1, 2, 1], [1, 5, 2], [8, 1, 3], [2, 1, 4]]
    with open(root / "duke_attributes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, r in enumerate(rows):
            w.writerow(r + [0, i % 6] + [0] * 7 + [1, 0, 0, 1, i % 2, 0, 0, 1, 7 - i, i])
    m, summary = build_duke_manifest(root, load_schema("duke"))
    assert [(r.split, r.tracklet, r.tracklet_no) for r in m.records] == [
        ("train", "0001_0001", 1), ("train", "0001_0002", 2), ("train", "0008_0001", 3), ("test", "0002_0001", 4)]
    assert m.records[3].labels[28 + 4] == 1 and m.records[3].labels[19 + 3] == 1  # bottom colour 4, top colour 3
    assert len(m.records[0].labels) == 36 and summary.frames == {"train": 6, "test": 2}


def _edit_manifest(src, dst, edit):
    lines = src.read_text().splitlines()
    dst.write_text("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize("frame,problem", [("../elsewhere/x.jpg", "leaves the dataset root"),
                                           ("/etc/passwd", "is an absolute path"),
                                           ("bbox_train/../../x.jpg", "leaves the dataset root")])
def test_manifest_paths_stay_inside_the_root(manifest_path, tmp_path, frame, problem):
    import json

    def edit(lines):
        rec = json.loads(lines[3])
        rec["frames"][0] = frame
        lines[3] = json.dumps(rec)
        return lines
    _edit_manifest(manifest_path, tmp_path / "m.jsonl", edit)
    with pytest.raises(ParError, match=rf"m.jsonl:4: tracklet \S+ frame '{re.escape(frame)}' {problem}"):
        read_manifest(tmp_path / "m.jsonl")


def test_manifest_wrong_label_count_and_header_only(manifest_path, tmp_path):
    import json

    def drop_label(lines):
        rec = json.loads(lines[2])
        rec["labels"] = rec["labels"][:-1]
        lines[2] = json.dumps(rec)
        return lines
    _edit_manifest(manifest_path, tmp_path / "short.jsonl", drop_label)
    with pytest.raises(ParError, match=r"short.jsonl:3 \(tracklet \S+\): expected 43 labels of 0/1 .* got 42"):
        read_manifest(tmp_path / "short.jsonl")
    _edit_manifest(manifest_path, tmp_path / "header.jsonl", lambda lines: lines[:1])
    with pytest.raises(ParError, match="no tracklet records"):
        read_manifest(tmp_path / "header.jsonl")


def test_manifest_never_replaces_what_par_did_not_write(synth_root, tmp_path):
    """An existing folder, or a file that is not a manifest, at --out is an error; both stay untouched."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    proc = run_par("manifest", "mars", synth_root, "--out", folder, check=False)
    assert proc.returncode == 2 and "is a folder" in proc.stderr
    assert (folder / "notes.txt").read_text() == "precious"
    other = tmp_path / "other.jsonl"
    other.write_text("my own file\n")
    proc = run_par("manifest", "mars", synth_root, "--out", other, check=False)
    assert proc.returncode == 2 and "is not a par manifest" in proc.stderr and other.read_text() == "my own file\n"
    run_par("manifest", "mars", synth_root, "--out", tmp_path / "m.jsonl")
    run_par("manifest", "mars", synth_root, "--out", tmp_path / "m.jsonl")  # an earlier manifest is replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- the real public annotation files (../shared/data) -------------------------------------------------------------

def test_real_mars_annotation_encodes():
    mars = needs_shared("mars")
    schema = load_schema("mars")
    labels = read_attribute_csv(mars / "mars_attributes.csv", schema)
    y = np.stack([v[0] for v in labels.values()])
    assert y.shape == (16360, 43)
    for g in schema.groups:
        if not g.is_binary:
            assert (y[:, g.start:g.end].sum(1) == 1).all(), g.name
    counts = mars_frame_counts(read_mars_info(mars / "info"), labels.keys())
    splits = [s for s, _ in counts.values()]
    assert len(counts) == 16360 and splits.count("train") == 8298 and splits.count("test") == 8062
    assert sum(n for s, n in counts.values() if s == "train") == 509914
    assert sum(n for s, n in counts.values() if s == "test") == 509966


def test_real_duke_annotation_encodes():
    duke = needs_shared("duke")
    labels = read_attribute_csv(duke / "duke_attributes.csv", load_schema("duke"))
    y = np.stack([v[0] for v in labels.values()])
    assert y.shape == (4832, 36)
    assert (y[:, 8:].reshape(-1) <= 1).all() and (y[:, 28:36].sum(1) == 1).all()


def test_like_mars_manifest_reproduces_real_labels(tmp_path):
    mars = needs_shared("mars")
    run_par("synth", tmp_path / "like", "--like-mars", mars, "--tracklets", "6", "--seed", "3", "--workers", "1")
    run_par("manifest", "mars", tmp_path / "like", "--out", tmp_path / "m.jsonl")
    m = read_manifest(tmp_path / "m.jsonl")
    real = csv_labels(mars / "mars_attributes.csv", load_schema("mars"))
    counts = mars_frame_counts(
        read_mars_info(mars / "info"), read_attribute_csv(mars / "mars_attributes.csv", load_schema("mars")).keys()
    )
    assert len(m.records) == 12
    for r in m.records:
        assert r.labels == real[r.tracklet]
        assert counts[(r.person_id, r.camera_id, r.tracklet_no)] == (r.split, len(r.frames))
