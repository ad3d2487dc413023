"""`par track` on synthetic footage with ground truth (`par synth --video`): tracking measured with the `trackers`
package's TrackEval-parity evaluation, attributes per track, every output, the round trip footage -> crops ->
manifest, and bad input (one line, nothing written)."""
import json
import re
import signal

import numpy as np
import pytest
import torch

from conftest import SCENE_PEOPLE, SCENE_SECONDS, TINY, one_error_line, run_par, run_par_forked
from par_pipeline.data.manifest import read_manifest
from par_pipeline.data.schema import load_schema
from par_pipeline.engine.metrics import group_answers

PEOPLE, SECONDS = SCENE_PEOPLE, SCENE_SECONDS


def mot_scores(gt, result) -> tuple[float, float, int]:
    from trackers.eval import evaluate_mot_sequence

    r = evaluate_mot_sequence(str(gt), str(result), metrics=["CLEAR", "Identity"])
    return r.CLEAR.MOTA, r.Identity.IDF1, int(r.CLEAR.IDSW)


def test_synthetic_video_has_ground_truth_and_is_deterministic(scene, tmp_path):
    rows = [list(map(float, line.split(","))) for line in (scene / "gt" / "gt.txt").read_text().splitlines()]
    assert {int(r[1]) for r in rows} == set(range(1, PEOPLE + 1)) and all(len(r) == 9 for r in rows)
    assert all(0 <= r[2] and 0 <= r[3] and r[2] + r[4] <= 320 and r[3] + r[5] <= 180 and 0 <= r[8] <= 1 for r in rows)
    assert min(r[8] for r in rows) < 0.9  # somebody is partly hidden at some point
    labels = (scene / "labels.csv").read_text().splitlines()
    assert labels[0].startswith("person_id,camera_id,tracklets_id") and len(labels) == 1 + PEOPLE
    run_par("synth", tmp_path / "again", "--video", "--people", PEOPLE, "--seconds", SECONDS, "--width", 320,
            "--height", 180, "--seed", 3)
    for name in ("gt/gt.txt", "labels.csv", "video.mp4"):
        assert (tmp_path / "again" / name).read_bytes() == (scene / name).read_bytes(), name


def test_ground_truth_boxes_give_the_ground_truth_tracks(scene, tracked, run_path):
    mota, idf1, switches = mot_scores(scene / "gt" / "gt.txt", tracked / "out" / "tracks.txt")
    assert mota >= 0.9 and idf1 >= 0.9 and switches <= 1, (mota, idf1, switches)
    doc = json.loads((tracked / "out" / "tracks.json").read_text())
    assert doc["format"] == "par-tracks" and doc["version"] == 1 and doc["stopped"] is None
    assert doc["frames_read"] == SECONDS * 10 and doc["detector"]["kind"] == "file" and len(doc["tracks"]) >= PEOPLE
    schema = load_schema("mars")
    for t in doc["tracks"]:
        assert len(t["frames_used"]) == doc["frames_per_track"] == 3  # the checkpoint's T
        assert t["frames"] == len(t["boxes"]) and t["first_frame"] <= t["frames_used"][0] <= t["last_frame"]
        probs = np.array([t["probabilities"][a] for a in schema.attributes])
        assert ((probs > 0) & (probs < 1)).all() and set(t["description"]) == set(schema.group_names)
        assert t["line"].startswith(f"#{t['id']} ")
    header = (tracked / "out" / "tracks.csv").read_text().splitlines()[0]
    assert header.startswith("track,first_frame,last_frame,frames,top length short")
    mot = [line.split(",") for line in (tracked / "out" / "tracks.txt").read_text().splitlines()]
    assert len(mot) == sum(t["frames"] for t in doc["tracks"]) and all(len(r) == 10 for r in mot)


def test_the_motion_detector_finds_and_follows_people(scene, run_path, tmp_path):
    out = run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / "m").stdout
    assert "people in 80 frames" in " ".join(out.split())
    mota, idf1, _ = mot_scores(scene / "gt" / "gt.txt", tmp_path / "m" / "tracks.txt")
    assert mota > 0.3 and idf1 > 0.3, (mota, idf1)


def test_a_frames_folder_tracks_as_the_video(scene, tracked, run_path, tmp_path):
    """MOTChallenge's img1/000001.jpg layout: the same tracks from the same detections."""
    from PIL import Image

    from par_pipeline.data.video import FrameSource

    (tmp_path / "seq" / "img1").mkdir(parents=True)
    for index, rgb in FrameSource(scene / "video.mp4"):
        Image.fromarray(rgb).save(tmp_path / "seq" / "img1" / f"{index + 1:06d}.jpg", quality=95)
    run_par("track", tmp_path / "seq" / "img1", "--checkpoint", run_path, "--out", tmp_path / "f", "--detections",
            scene / "gt" / "gt.txt")
    assert (tmp_path / "f" / "tracks.txt").read_text() == (tracked / "out" / "tracks.txt").read_text()


def test_crops_round_trip_into_a_dataset(tracked, tmp_path):
    """--save-crops: MARS folders and the predicted labels, which `par manifest mars` reads back."""
    doc = json.loads((tracked / "out" / "tracks.json").read_text())
    crops = tracked / "crops"
    run_par("manifest", "mars", crops, "--attributes", crops / "mars_attributes.csv", "--out", tmp_path / "m.jsonl")
    m = read_manifest(tmp_path / "m.jsonl")
    schema = load_schema("mars")
    assert sorted(r.person_id for r in m.records) == [t["id"] for t in doc["tracks"]]
    for t in doc["tracks"]:
        [r] = [r for r in m.records if r.person_id == t["id"]]
        probs = np.array([t["probabilities"][a] for a in schema.attributes])
        expected = [k for k, _ in group_answers(probs, schema.groups, 0.45)]
        got = [r.labels[g.start] if g.is_binary else r.labels[g.start:g.end].index(1) for g in schema.groups]
        assert got == expected and len(r.frames) == t["frames"]
    # --crops-train 0.5: half the people (evenly over the ids) under bbox_train, the rest under bbox_test
    splits = {r.person_id: r.split for r in m.records}
    ids = sorted(splits)
    assert [splits[i] for i in ids] == ["test" if k % 2 == 0 else "train" for k in range(len(ids))]
    run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.zarr", *TINY)


def test_annotated_video(tracked, scene, run_path, tmp_path, open_page):
    """H.264 in MP4, which Chromium plays; labels short, colours first, inside the frame and apart."""
    import av
    from PIL import Image

    from par_pipeline.footage.annotate import LABEL_CHARS, draw_people

    with av.open(str(tracked / "annotated.mp4")) as c:
        assert c.metadata.get("comment") == "par track --annotate" and c.streams.video[0].codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == SECONDS * 10 and frames[0].shape == (180, 320, 3)
    doc = json.loads((tracked / "out" / "tracks.json").read_text())
    assert doc["annotated"]["codec"] == "libx264"
    (tracked / "play.html").write_text('<video id="v" src="annotated.mp4" muted></video>')
    page = open_page(tracked / "play.html").page
    played = page.evaluate("""() => new Promise(done => { const v = document.getElementById('v');
        v.onerror = () => done({error: v.error && v.error.code});
        v.oncanplay = () => v.play().then(() => done({width: v.videoWidth, duration: v.duration}),
                                          e => done({error: String(e)})); v.load(); })""")
    assert played.get("width") == 320 and played["duration"] > SECONDS - 1, played
    # two people side by side at the top edge: both labels inside the frame, neither over the other
    img = Image.new("RGB", (160, 90))
    placed = draw_people(img, [(1, (0.0, 0.0, 60.0, 80.0)), (2, (10.0, 2.0, 70.0, 85.0))],
                         {1: "#1 red/black backpack", 2: "#2 blue/blue hat, hand bag"})
    assert all(0 <= x0 and 0 <= y0 and x1 <= 160 and y1 <= 90 for x0, y0, x1, y1 in placed)
    (a, b) = placed
    assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert all(len(t["line"]) > 0 for t in doc["tracks"]) and LABEL_CHARS <= 30
    mine = tmp_path / "mine.mp4"
    mine.write_bytes(b"my own video")
    line = one_error_line(run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / "o",
                                  "--detections", scene / "gt" / "gt.txt", "--annotate", mine, check=False))
    assert "mine.mp4: exists and is not a par annotated video" in line
    assert mine.read_bytes() == b"my own video" and not (tmp_path / "o").exists()


def test_torchvision_detectors_load_local_weights_only(tmp_path):
    from par_pipeline.errors import ParError
    from par_pipeline.footage.detect import TorchvisionDetector

    with pytest.raises(ParError, match="needs --detector-weights FILE"):
        TorchvisionDetector("ssdlite320_mobilenet_v3_large", None, False, 0.5, "cpu")
    with pytest.raises(ParError, match=r"unknown; one of \["):
        TorchvisionDetector("yolo", None, True, 0.5, "cpu")
    random = TorchvisionDetector("ssdlite320_mobilenet_v3_large", None, True, 0.0, "cpu", min_height=1)
    torch.save(random.model.state_dict(), tmp_path / "ssd.pth")
    loaded = TorchvisionDetector("ssdlite320_mobilenet_v3_large", str(tmp_path / "ssd.pth"), False, 0.0, "cpu",
                                 min_height=1)
    assert loaded.record()["weights"]["name"] == "ssd.pth" and len(loaded.record()["weights"]["sha256"]) == 64
    frames = [np.random.default_rng(k).integers(0, 255, (120, 160, 3), dtype=np.uint8) for k in range(2)]
    a, b = random.detect_batch(frames), loaded.detect_batch(frames)
    assert all(np.array_equal(x.boxes, y.boxes) and (x.scores >= 0).all() for x, y in zip(a, b))
    with pytest.raises(ParError, match=r"ssd.pth: these weights are not a fcos_resnet50_fpn"):
        TorchvisionDetector("fcos_resnet50_fpn", str(tmp_path / "ssd.pth"), False, 0.5, "cpu")


def _static_video(path, frames=30):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        for _ in range(frames):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((120, 160, 3), 90, np.uint8), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _truncated_mkv(scene, path):
    import av

    with av.open(str(scene / "video.mp4")) as src, av.open(str(path), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])


BAD = [
    ("malformed-row", "1,1,10,10,x,20,1\n", r"dets.txt:1: not a MOTChallenge row of numbers"),
    ("negative-size", "1,1,10,10,-5,20,1\n", r"dets.txt:1: box of width -5 and height 20; sizes must be positive"),
    ("reused-id", "1,7,10,10,5,20,1\n1,7,30,10,5,20,1\n", r"dets.txt:2: id 7 appears twice in frame 1"),
    ("short-row", "1,7,10\n", r"dets.txt:1: 3 columns"),
    ("nan-box", "1,1,10,10,50,100,1\n2,1,nan,10,50,100,1,-1,-1,-1\n", r"dets.txt:2: x not a finite number"),
    ("inf-size", "1,1,10,10,inf,100,1\n", r"dets.txt:1: w not a finite number"),
]


@pytest.mark.parametrize("name,rows,message", BAD, ids=[b[0] for b in BAD])
def test_bad_detections_files(scene, run_path, tmp_path, name, rows, message):
    (tmp_path / "dets.txt").write_text(rows)
    line = one_error_line(run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / "o",
                                  "--detections", tmp_path / "dets.txt", check=False))
    assert re.search(message, line), line
    assert not (tmp_path / "o").exists()


def test_bad_footage_and_outputs(scene, run_path, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 50)
    line = one_error_line(run_par("track", tmp_path / "broken.mp4", "--checkpoint", run_path, "--out", tmp_path / "o",
                                  check=False))
    assert "broken.mp4: unreadable video" in line
    _static_video(tmp_path / "empty.mp4")
    line = one_error_line(run_par("track", tmp_path / "empty.mp4", "--checkpoint", run_path, "--out", tmp_path / "o",
                                  check=False))
    assert "empty.mp4: no people found in 30 frames" in line
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    line = one_error_line(run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / "mine",
                                  check=False))
    assert "mine: exists and is not a par tracks output" in line and (tmp_path / "mine" / "notes.txt").exists()
    assert not (tmp_path / "o").exists()


def test_a_damaged_video_is_answered_up_to_the_damage(scene, run_path, tmp_path):
    _truncated_mkv(scene, tmp_path / "cut.mkv")
    out = run_par("track", tmp_path / "cut.mkv", "--checkpoint", run_path, "--out", tmp_path / "o", "--detections",
                  scene / "gt" / "gt.txt").stdout
    doc = json.loads((tmp_path / "o" / "tracks.json").read_text())
    assert doc["stopped"]["frames_read"] == doc["frames_read"] < SECONDS * 10
    assert "truncated" in doc["stopped"]["reason"]
    assert "stopped early" in " ".join(out.split())
    assert max(t["last_frame"] for t in doc["tracks"]) <= doc["frames_read"]


def test_kill_9_then_the_same_command_finishes(scene, tracked, run_path, tmp_path):
    """Killed after either pass or with the output built but not yet in place (the points `par track` marks), the
    same command ends with the tracks an uninterrupted run writes; nothing was in place after the kill, and what the
    killed process had built beside it is cleared by the next run."""
    for k in (1, 2, 3):
        args = ["track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / f"o{k}", "--detections",
                scene / "gt" / "gt.txt"]
        proc = run_par_forked(*args, env={"PAR_TEST_KILL_AT": str(k)})
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-500:]
        assert not (tmp_path / f"o{k}").exists()
        left = list(tmp_path.glob(f".o{k}.tmp-*"))
        assert bool(left) == (k == 3)  # the third point is after the folder was built beside its place
        run_par(*args)
        assert not list(tmp_path.glob(f".o{k}.*"))
        assert (tmp_path / f"o{k}" / "tracks.txt").read_text() == (tracked / "out" / "tracks.txt").read_text()
        done = json.loads((tmp_path / f"o{k}" / "tracks.json").read_text())
        reference = json.loads((tracked / "out" / "tracks.json").read_text())
        assert done["tracks"] == reference["tracks"]


def test_a_torchvision_detector_through_par_track(scene, run_path, tmp_path):
    """The torchvision backend end to end through `par track`: with (seeded) random weights every frame is detected
    and tracked, and nothing lasts as a person, which is said in one line naming the detector."""
    from PIL import Image

    from par_pipeline.data.video import FrameSource

    (tmp_path / "img1").mkdir()
    for index, rgb in FrameSource(scene / "video.mp4"):  # 16 frames are enough to go through
        Image.fromarray(rgb).save(tmp_path / "img1" / f"{index + 1:06d}.jpg")
        if index == 15:
            break
    result = run_par("track", tmp_path / "img1", "--checkpoint", run_path, "--out", tmp_path / "tv", "--detector",
                     "torchvision:ssdlite320_mobilenet_v3_large", "--allow-random-detector", "--detector-threshold",
                     "0.0", "--min-height", "1", "--detector-batch", "8", check=False)
    line = one_error_line(result)
    assert "no people found in 16 frames" in line and "torchvision:ssdlite320_mobilenet_v3_large" in line
    assert not (tmp_path / "tv").exists()


def test_search_the_tracked_people(tracked, tmp_path):
    """`par search`: conditions on groups, values and probabilities, AND-ed, ranked by the product of probabilities;
    recomputed here from tracks.json."""
    doc = json.loads((tracked / "out" / "tracks.json").read_text())
    result = run_par("search", tracked / "out", "top length short", "top color = black", "age = young >= 0.2",
                     "--json")
    found = json.loads(result.stdout)
    expected = []
    for t in doc["tracks"]:
        p = t["probabilities"]
        if t["description"]["top length short"] == "yes" and t["description"]["top color"] == "black" \
                and p["age young"] >= 0.2:
            expected.append((t["id"], p["top length short"] * p["top color black"] * p["age young"]))
    expected.sort(key=lambda e: -e[1])
    assert [(r["track"], pytest.approx(r["score"])) for r in found["results"]] == expected
    assert found["format"] == "par-search" and len(found["conditions"]) == 3
    negated = json.loads(run_par("search", tracked / "out", "backpack = no", "--json").stdout)["results"]
    assert all(r["scores"]["backpack = no"] == pytest.approx(1 - next(
        t for t in doc["tracks"] if t["id"] == r["track"])["probabilities"]["backpack"]) for r in negated)
    assert "people match" in run_par("search", tracked / "out", "hat >= 0").stdout  # a table by default
    # --alert on a recorded file: the same rules as live, on the final records, in alerts.jsonl
    alerts = [json.loads(line) for line in (tracked / "out" / "alerts.jsonl").read_text().splitlines()]
    rule = json.loads(run_par("search", tracked / "out", "backpack = no, hat", "--json").stdout)["results"]
    assert sorted(a["track"] for a in alerts) == sorted(r["track"] for r in rule)
    assert all(a["event"] == "alert" and a["rule"] == "backpack = no, hat" for a in alerts)
    assert doc["alerts"] == {"rules": ["backpack = no, hat"], "events": len(alerts), "webhook": None}
    for bad, message in (("top colour = red", "no attribute group 'top colour'"),
                         ("top color = mauve", "'top color' takes one of"), ("hat >= 1.5", "between 0 and 1")):
        assert message in one_error_line(run_par("search", tracked / "out", bad, check=False))
    assert "no tracks.json" in one_error_line(run_par("search", tmp_path, "hat", check=False))
