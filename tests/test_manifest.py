import csv
import json
import re
import shutil

import numpy as np
import pytest

from conftest import ROOT, TINY, needs_shared, one_error_line, run_par
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


def _set(index, **fields):
    def edit(lines):
        rec = json.loads(lines[index])
        rec.update(fields)
        lines[index] = json.dumps(rec)
        return lines
    return edit


def _drop_from_schema(*keys):
    def edit(lines):
        header = json.loads(lines[0])
        node = header["schema_definition"]
        for k in keys[:-1]:
            node = node[k]
        del node[keys[-1]]
        lines[0] = json.dumps(header)
        return lines
    return edit


HAND_EDITS = [
    ("frames-a-string", _set(2, frames="abc"), r"m.jsonl:3: 'frames' must be a non-empty list of file names, got a "
                                               r"string"),
    ("frames-empty", _set(1, frames=[]), r"m.jsonl:2: 'frames' must be a non-empty list of file names, got an empty"),
    ("frame-a-number", _set(1, frames=["a.jpg", 7]), r"m.jsonl:2: 'frames' must be a non-empty list of file names; "
                                                     r"item \[1\] is a number"),
    ("person-a-string", _set(4, person_id="12"), r"m.jsonl:5: 'person_id' must be a whole number, got a string"),
    ("label-true", _set(1, labels=[True] * 43), r"m.jsonl:2: 'labels' must be a list of 0/1 labels in schema order; "
                                                r"item \[0\] is true/false"),
    ("misspelt-field", _set(3, frame=["x.jpg"]), r"m.jsonl:4: 'frame' is not a field of this object"),
    ("no-groups", _drop_from_schema("groups"), r"m.jsonl:1: 'schema_definition.groups' is missing"),
    ("no-kind", _drop_from_schema("groups", 2, "kind"),
     r"m.jsonl:1: 'schema_definition.groups\[2\].kind' is missing \(it must be 'binary' or 'multiclass'\)"),
    ("root-null", _set(0, root=None), r"m.jsonl:1: 'root' must be the dataset root .*, got null"),
]


@pytest.mark.parametrize("name,edit,message", HAND_EDITS, ids=[c[0] for c in HAND_EDITS])
def test_hand_edited_manifest_fields_are_one_line(manifest_path, tmp_path, name, edit, message):
    """A manifest edited by hand with a wrong field: `par extract` ends in one line naming the file, the line and the
    field, and writes nothing."""
    _edit_manifest(manifest_path, tmp_path / "m.jsonl", edit)
    line = one_error_line(run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.zarr", *TINY, check=False))
    assert re.search(message, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]


SCHEMA_EDITS = [
    ("no-groups", lambda s: s.pop("groups"), r"'groups' is missing \(it must be a non-empty list of group objects\)"),
    ("no-column", lambda s: s["groups"][0].pop("column"), r"'groups\[0\].column' is missing"),
    ("unknown-kind", lambda s: s["groups"][1].update(kind="ternary"),
     r"'groups\[1\].kind' must be 'binary' or 'multiclass', got 'ternary'"),
    ("values-text", lambda s: s["groups"][3].update(values="two"), r"'groups\[3\].values' must be how many values"),
    ("binary-two-attributes", lambda s: s["groups"][0]["attributes"].append(s["groups"][0]["attributes"][0]),
     r"schema 'mars': binary group 'top length short' needs one attribute and 2 values"),
]


@pytest.mark.parametrize("name,edit,message", SCHEMA_EDITS, ids=[c[0] for c in SCHEMA_EDITS])
def test_bad_schema_files_are_one_line(synth_root, tmp_path, name, edit, message):
    """`par manifest --schema FILE` with a schema file missing or misspelling a field: one line naming the file and
    the field, nothing written."""
    schema = json.loads((ROOT / "data_manifests" / "schemas" / "mars.json").read_text())
    edit(schema)
    (tmp_path / "my-schema.json").write_text(json.dumps(schema))
    line = one_error_line(run_par("manifest", "mars", synth_root, "--schema", tmp_path / "my-schema.json", "--out",
                                  tmp_path / "m.jsonl", check=False))
    assert re.search(r"my-schema.json: " + message, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-schema.json"]
