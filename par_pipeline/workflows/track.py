"""`par track`: who in camera footage wore what. Detect people, track them, and name each person's attributes over
their whole track with a checkpoint, as `par eval` names a tracklet's.

Streamed passes over the footage, so memory does not grow with its length:
1. detect and track: every frame's detections go to ByteTrack; a track keeps only its boxes.
2. attributes: each track's T evenly spaced frames (the rule `par eval` uses) are cropped, prepared exactly as the
   checkpoint's store was (zero-pad to a square, resize), encoded by the store's CLIP and rounded to the store's
   dtype; a track's tokens are averaged and its probabilities computed as soon as its last chosen frame has passed.
3. with `--save-crops`, every tracked box in the MARS layout, with the predicted labels.
4. with `--annotate`, the video again with boxes, ids and each person's attribute line.
Outputs (OUT, written whole): tracks.json (`par-tracks`), tracks.csv, tracks.txt (MOTChallenge), tracks.html (crops,
attributes and a search box; par_pipeline/pages). A damaged video
is answered up to the damage and the outputs say where it stopped.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..config import TrackConfig, check_device
from ..data.layouts import MARS_CSV, MARS_SPLITS, mars_frame_path
from ..data.preprocess import prepare_image
from ..data.sampling import sample_frames
from ..data.schema import AttributeSchema, schema_from_dict
from ..data.video import FrameSource
from ..deploy.runtime import AttributeRuntime, load_runtime
from ..engine.metrics import group_answers
from ..errors import ParError
from ..footage import TRACKS_FORMAT, TRACKS_VERSION
from ..footage.alerts import AlertBook, check_alert_options, parse_alerts
from ..footage.annotate import check_annotate_target, encoder_for, label, write_annotated
from ..footage.cameras import source_names
from ..footage.detect import detections_of, make_detector
from ..footage.records import (
    colour_histogram,
    crop_box,
    mot_rows,
    track_cues,
    track_probabilities,
    track_record,
    tracks_csv,
)
from ..footage.stream import check_not_a_broken_url
from ..footage.tracking import PersonTracker, Track, TrackerOptions
from ..footage.webhook import Webhook
from ..outputs import atomic_write, check_dir_target, fault_point, replace_dir
from ..pages.render import thumbnail_uri
from ..pages.tracks_page import tracks_html


class StageClock:
    """Seconds spent per stage (decode, detect, track, crop, CLIP, fusion, write): what `make bench` reports as each
    stage's share of the time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now

    def frames(self, source: Any) -> Iterator[tuple[int, np.ndarray]]:
        """The source's frames, the time spent decoding them counted."""
        it = iter(source)
        while True:
            t = time.perf_counter()
            item = next(it, None)
            self.add("decode", t)
            if item is None:
                return
            yield item


TRACKS_KIND = "tracks"
CROPS_KIND = "tracked crops"
Progress = Callable[[str, int, int | None], None]


def track_sources(sources: list[str | Path], cfg: TrackConfig, on_progress: Progress | None = None
                  ) -> list[dict[str, Any]]:
    """Each source into OUT (one source) or OUT/<name>/ (several); returns each one's tracks.json record."""
    if not sources:
        raise ParError("nothing to track: give a video file or a folder of frames")
    check_alert_options(cfg, live=False)
    if cfg.link:
        raise ParError("--link links live cameras as their records arrive; for recorded videos run `par link OUT` "
                       "on what `par track` wrote")
    for s in sources:
        check_not_a_broken_url(str(s))
    if len(sources) > 1 and (cfg.annotate or cfg.save_crops or cfg.detections):
        raise ParError("--annotate, --save-crops and --detections take one video at a time")
    named = source_names([str(s) for s in sources])  # NAME=SOURCE, or the file's stem
    outs = [Path(cfg.out)] if len(sources) == 1 else [Path(cfg.out) / n for n, _ in named]
    return [track_video(Path(s), o, cfg, on_progress)[0] for (_, s), o in zip(named, outs)]


@dataclass
class Pending:
    """A track whose chosen frames are being encoded: their tokens so far."""
    track: Track
    chosen: list[int]  # positions in the track's frames
    tokens: list[torch.Tensor] = field(default_factory=list)
    colours: list[np.ndarray] = field(default_factory=list)  # the chosen crops' colour histograms


def track_video(source_path: Path, out: Path, cfg: TrackConfig, on_progress: Progress | None = None
                ) -> tuple[dict[str, Any], dict[str, float]]:
    """Track one source into `out`; returns its tracks.json record and the seconds spent per stage."""
    check_device(cfg.device)
    check_dir_target(out, TRACKS_KIND)  # every output is checked before the footage is read
    if cfg.save_crops:
        check_dir_target(cfg.save_crops, CROPS_KIND)
    if cfg.annotate:
        check_annotate_target(Path(cfg.annotate))
    source = FrameSource(source_path)
    rt = load_runtime(cfg.checkpoint, cfg.runtime, cfg.pretrained, cfg.device)
    meta = rt.meta
    detector = make_detector(cfg)
    schema = schema_from_dict(meta["schema_definition"])
    rules = parse_alerts(cfg.alerts, schema)  # a wrong rule is one line before the footage is read
    options = TrackerOptions(cfg.activation, cfg.high_confidence, cfg.match_iou, cfg.confirm_frames, cfg.lost_frames)

    # pass 1: detect and track
    tracker, read, clock = PersonTracker(options), 0, StageClock()
    since, decoded = time.perf_counter(), 0.0
    for index, _, found in detections_of(detector, clock.frames(source), cfg.detector_batch):
        now = time.perf_counter()  # since the last update: decoding (counted by the clock) and detection
        clock.seconds["detect"] = clock.seconds.get("detect", 0.0) + now - since - (clock.seconds["decode"] - decoded)
        decoded = clock.seconds["decode"]
        tracker.update(index, found)
        since = clock.add("track", now)
        read = index + 1
        if on_progress:
            on_progress("detect + track", read, None)
    stopped = source.stopped
    if read == 0:
        raise ParError(f"{source_path}: no frame could be read ({stopped.reason if stopped else 'empty'}); give an "
                       f"intact video")
    tracks = [t for t in tracker.finish() if len(t.frames) >= cfg.min_track_frames]
    if not tracks:
        raise ParError(f"{source_path}: no people found in {read} frames (no track of at least "
                       f"{cfg.min_track_frames} frames; detector {detector.record()['kind']}); check the detector and "
                       f"its threshold, or lower --min-track-frames")
    fault_point("track-pass-1")

    # pass 2: crops of each track's chosen frames -> CLIP -> the fusion model
    T = cfg.frames or meta["eval_frames"]
    thumbnails: dict[int, list[str]] = {}
    results = _attributes(source, read, tracks, T, rt, cfg, clock, on_progress, thumbnails)
    fault_point("track-pass-2")
    records = [track_record(t, *results[t.id], schema, meta["threshold"]) for t in tracks]
    doc = {"format": TRACKS_FORMAT, "version": TRACKS_VERSION, "source": str(source_path), "fps": source.fps,
           "frames_read": read, "stopped": None if stopped is None else stopped.__dict__,
           "checkpoint": meta["_path"], "checkpoint_sha256": meta["weights_sha256"], "runtime": rt.record(),
           "threshold": meta["threshold"],
           "detector": detector.record(), "tracker": options.record(),
           "min_track_frames": cfg.min_track_frames, "frames_per_track": T, "attributes": meta["attributes"],
           "groups": [g.name for g in schema.groups], "tracks": records}
    book = AlertBook(rules, context={"camera": source_path.stem})
    events = [e for r in records for e in book.events(r, provisional=False)]  # the live run's rules, on final records
    if rules:
        doc["alerts"] = {"rules": [r.text for r in rules], "events": len(events),
                         "webhook": _post(events, records, thumbnails, cfg) if cfg.alert_webhook else None}
    if cfg.save_crops:
        _save_crops(source, read, tracks, records, schema, meta["threshold"], Path(cfg.save_crops), cfg.crops_train,
                    on_progress)
    if cfg.annotate:
        doc["annotated"] = {"file": str(cfg.annotate),
                            "codec": _annotate(source, read, tracks, records, schema, Path(cfg.annotate), on_progress)}

    page = tracks_html(doc, thumbnails)

    def build(folder: Path) -> None:
        (folder / "tracks.json").write_text(json.dumps(doc, indent=1) + "\n")
        (folder / "tracks.html").write_text(page)
        (folder / "tracks.csv").write_text(tracks_csv(records, schema, meta["attributes"]))
        (folder / "tracks.txt").write_text(mot_rows(tracks))
        if rules:
            (folder / "alerts.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    t = time.perf_counter()
    replace_dir(out, TRACKS_KIND, build)
    clock.add("write", t)
    return doc, clock.seconds


def _post(events: list[dict[str, Any]], records: list[dict[str, Any]], thumbnails: dict[int, list[str]],
          cfg: TrackConfig) -> dict[str, Any]:
    """Each alert event to the webhook (the person's record with it, as a live run sends it); what was delivered."""
    by_id = {r["id"]: r for r in records}
    hook = Webhook(cfg.alert_webhook, retries=cfg.webhook_retries)
    for e in events:
        extra = {"thumbnails": thumbnails.get(e["track"], [])} if cfg.webhook_thumbnails else {}
        hook.post({**e, "record": {**by_id[e["track"]], **extra}})
    return hook.close()


def _attributes(source: FrameSource, read: int, tracks: list[Track], T: int, rt: AttributeRuntime,
                cfg: TrackConfig, clock: StageClock, on_progress: Progress | None,
                thumbnails: dict[int, list[str]]) -> dict[int, tuple[np.ndarray, list[int], dict[str, str]]]:
    """Track id -> (A probabilities, the frames used, what links it across cameras); each used crop's thumbnail
    goes into `thumbnails` (for tracks.html). A track's tokens are held only between its first and last chosen frame."""
    wanted: dict[int, list[tuple[Pending, tuple[float, ...]]]] = {}
    pending = {t.id: Pending(t, sample_frames(len(t.frames), T, None).tolist()) for t in tracks}
    for p in pending.values():
        for pos in p.chosen:
            wanted.setdefault(p.track.frames[pos], []).append((p, p.track.boxes[pos]))
    results: dict[int, tuple[np.ndarray, list[int], dict[str, str]]] = {}
    batch: list[tuple[Pending, np.ndarray]] = []

    def flush() -> None:
        if not batch:
            return
        t = time.perf_counter()
        images = torch.from_numpy(np.stack([img for _, img in batch]))
        feats = rt.tokens(images)  # what a store would hold
        t = clock.add("clip", t)
        for (p, _), f in zip(batch, feats):
            p.tokens.append(f)
            if len(p.tokens) == len(p.chosen):
                used = [p.track.frames[k] for k in p.chosen]
                tokens = torch.stack(p.tokens)
                results[p.track.id] = (track_probabilities(rt, tokens), used,
                                       track_cues(tokens, p.colours))
                p.tokens = []
        clock.add("fusion", t)
        batch.clear()

    last_needed = max(wanted)
    for index, rgb in clock.frames(source):
        t = time.perf_counter()
        for p, box in wanted.get(index, []):
            crop = crop_box(rgb, box)
            batch.append((p, prepare_image(crop, rt.preprocess)))
            p.colours.append(colour_histogram(crop))
            thumbnails.setdefault(p.track.id, []).append(thumbnail_uri(crop))
        clock.add("crop", t)
        if len(batch) >= cfg.batch_size:
            flush()
        if on_progress:
            on_progress("attributes", index + 1, read)
        if index >= last_needed or index + 1 >= read:
            break
    flush()
    missing = [t.id for t in tracks if t.id not in results]
    if missing:  # the second pass read less than the first: the file changed under us
        raise ParError(f"{source.path}: frames of track(s) {missing[:5]} could not be read again; is the file being "
                       f"written? run the same command on a finished file")
    return results


def _boxes_by_frame(tracks: list[Track]) -> dict[int, list[tuple[int, tuple[float, ...]]]]:
    """Frame index -> (track id, box) of every track seen in it."""
    boxes: dict[int, list[tuple[int, tuple[float, ...]]]] = {}
    for t in tracks:
        for f, b in zip(t.frames, t.boxes):
            boxes.setdefault(f, []).append((t.id, b))
    return boxes


def train_people(ids: list[int], share: float) -> set[int]:
    """`--crops-train`: that share of the people (track ids), spread evenly over them in id order."""
    ordered = sorted(ids)
    return {pid for k, pid in enumerate(ordered) if int((k + 1) * share) > int(k * share)}


def _save_crops(source: FrameSource, read: int, tracks: list[Track], records: list[dict[str, Any]],
                schema: AttributeSchema, threshold: float, folder: Path, train_share: float,
                on_progress: Progress | None) -> None:
    """Every tracked box as a MARS tracklet (`bbox_test/<id>/<id>C1T<id>F<frame>.jpg`, person = track; the
    `--crops-train` share of the people under bbox_train/) and the predicted labels as a mars_attributes.csv to
    correct by hand: `par manifest mars FOLDER` reads them back."""
    if schema.name != "mars":
        raise ParError(f"--save-crops writes the MARS layout; the checkpoint's schema is {schema.name}")
    if max(t.id for t in tracks) > 9999:
        raise ParError("--save-crops: more than 9,999 tracks do not fit MARS's 4-digit person ids")
    boxes = _boxes_by_frame(tracks)
    train = train_people([t.id for t in tracks], train_share)
    split = {t.id: "train" if t.id in train else "test" for t in tracks}

    def build(tmp: Path) -> None:
        for name in MARS_SPLITS.values():
            (tmp / name).mkdir()
        for t in tracks:
            (tmp / mars_frame_path(split[t.id], t.id, 1, t.id, 0)).parent.mkdir(parents=True)
        for index, rgb in source:
            for tid, b in boxes.get(index, []):
                crop_box(rgb, b).save(tmp / mars_frame_path(split[tid], tid, 1, tid, index), quality=95)
            if on_progress:
                on_progress("save crops", index + 1, read)
            if index + 1 >= read:
                break
        with open(tmp / MARS_CSV, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(schema.csv_columns)
            for r in records:
                probs = np.array([r["probabilities"][a] for a in schema.attributes])
                answers = group_answers(probs, schema.groups, threshold)
                w.writerow(schema.csv_row(r["id"], 1, r["id"], {g.column: k for g, (k, _) in zip(schema.groups,
                                                                                                    answers)}))

    replace_dir(folder, CROPS_KIND, build)


def _annotate(source: FrameSource, read: int, tracks: list[Track], records: list[dict[str, Any]],
              schema: AttributeSchema, path: Path, on_progress: Progress | None) -> str:
    """The annotated video (footage/annotate.py), written whole; returns the encoder used."""
    labels = {r["id"]: label(r, schema) for r in records}
    codec = encoder_for(path)

    def after_frame(index: int) -> bool:
        if on_progress:
            on_progress("annotate", index + 1, read)
        return index + 1 >= read

    check_annotate_target(path)
    atomic_write(path, lambda tmp: write_annotated(tmp, path.suffix.lower(), source, source.fps,
                                                   _boxes_by_frame(tracks), labels, codec, after_frame))
    return codec
