"""`par track` on live footage: cameras (RTSP/RTMP/HTTP/UDP streams, capture devices) and files played as streams
(`--live`), in one pass with bounded memory, each person's record written as they leave.

Per camera a thread runs decode (its own reader thread, footage.stream) -> detect -> track. Each open track keeps at
most `keep_crops` crops, thinned evenly as it grows (`KeptCrops`), so they always span it; when the tracker closes a
track (unmatched for `lost_frames`), the crops of its T chosen frames go to the one `AttributeBatcher` all cameras
share (the checkpoint's CLIP + fusion model, in full batches), and the record is appended to OUT/tracks.jsonl (one
line, one write: a reader sees whole lines and at most a last one still being written, which readers leave out)
with its MOTChallenge rows to tracks.txt. Alert rules
(footage/alerts.py) turn records into events in alerts.jsonl and, with `--alert-webhook`, POSTs (footage/webhook.py,
never blocking the video). At the end (the stream over, Ctrl-C or SIGTERM: open tracks are closed and written first)
tracks.json, tracks.csv and tracks.html are made from every run's records. OUT is par's own folder, continued by a
later run into it (footage/live_folder.py), locked while a run writes. With `--link` (several cameras), each record
gets its person across the cameras as it arrives, and the changes go to OUT/links.jsonl (footage/live_link.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..config import TrackConfig, check_device
from ..data.schema import AttributeSchema, schema_from_dict
from ..deploy.runtime import load_runtime
from ..errors import ParError
from ..footage import TRACKS_FORMAT, TRACKS_VERSION, epoch_of, now_text, read_live_records
from ..footage.alerts import AlertBook, check_alert_options, parse_alerts
from ..footage.batcher import AttributeBatcher, Request
from ..footage.cameras import for_this_rank, source_names
from ..footage.detect import make_detector
from ..footage.linking import default_rules
from ..footage.live_folder import (
    ALERTS,
    LIVE_KIND,
    MOT,
    RECORDS,
    RunStart,
    append_line,
    check_camera_dir,
    check_cameras_dir,
    claim_cameras_dir,
    end_run,
    read_runs,
    start_run,
)
from ..footage.live_link import LINKS, ROUTE_ALERTS, LiveLink, parse_routes
from ..footage.records import crop_box, mot_rows, track_record, tracks_csv
from ..footage.stream import Gap, LiveSource, check_live_source
from ..footage.tracking import KeptCrops, PersonTracker, Track, TrackerOptions
from ..footage.webhook import Webhook
from ..outputs import atomic_write, claim_dir, exclusive
from ..pages.render import thumbnail_uri
from ..pages.tracks_page import tracks_html

Event = Callable[[str, str, dict[str, Any]], None]  # (kind: frames|record|alert, camera, payload)


# --- one camera ----------------------------------------------------------------------------------------------------

@dataclass
class Camera:
    name: str
    source: LiveSource
    out: Path
    detector: Any
    tracker: PersonTracker  # made (and its imports done) before the stream starts
    options: TrackerOptions
    cfg: TrackConfig
    T: int
    schema: AttributeSchema
    threshold: float
    batcher: AttributeBatcher
    book: AlertBook
    webhook: Webhook | None
    on_event: Event | None
    start: RunStart
    link: LiveLink | None = None
    started: float = 0.0  # the run's start, seconds since the epoch (runs.jsonl's started_at)
    open_first: int = 0  # the first frame of the oldest track still in view (else the latest frame)
    in_flight: dict[int, int] = field(default_factory=dict)  # closed tracks not yet delivered: id -> first frame
    records: int = 0
    provisional: int = 0
    events: Counter = field(default_factory=Counter)
    short_tracks: int = 0
    last_index: int = -1
    delays: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the main thread reports it after the others stop
            self.error = exc

    def _loop(self) -> None:
        tracker = self.tracker
        kept: dict[int, KeptCrops] = {}
        arrived: dict[int, float] = {}
        updated: dict[int, float] = {}
        for item in self.source:
            if isinstance(item, Gap):
                tracker.pass_time(self.last_index, item.frames)
                self.last_index += item.frames
            else:
                if item.index - self.last_index > 1:  # frames dropped while we were busy
                    tracker.pass_time(self.last_index, item.index - self.last_index - 1)
                self.last_index = item.index
                if self.on_event:
                    stats = self.source.stats
                    self.on_event("frames", self.name, {"frames_read": stats.frames_read, "dropped": stats.dropped})
                found = self.detector.detect(item.index, item.rgb)
                for tid, box in tracker.update(item.index, found):
                    keep = kept.setdefault(tid, KeptCrops(self.cfg.keep_crops))
                    keep.add(item.index, lambda box=box: crop_box(item.rgb, box))
                    arrived[tid] = item.arrived
                    updated.setdefault(tid, item.time)
                if self.cfg.update_every:
                    for tid, track in tracker.open.items():
                        if (track.last == item.index and item.time - updated[tid] >= self.cfg.update_every
                                and len(track.frames) >= self.cfg.min_track_frames):  # one that will be kept
                            updated[tid] = item.time
                            self._submit(track, kept[tid], arrived[tid], provisional=True)
            for track in tracker.take_closed():
                self._close(track, kept.pop(track.id, None), arrived.pop(track.id, 0.0))
                updated.pop(track.id, None)
            self.open_first = min((t.first for t in tracker.open.values()), default=max(self.last_index, 0))
        for track in list(tracker.open.values()):  # the stream is over: who is still in view leaves now
            self._close(track, kept.pop(track.id, None), arrived.pop(track.id, 0.0))

    def _close(self, track: Track, keep: KeptCrops | None, last_arrived: float) -> None:
        if keep is None or len(track.frames) < self.cfg.min_track_frames:
            self.short_tracks += 1
            return
        self._submit(track, keep, last_arrived, provisional=False)

    def _submit(self, track: Track, keep: KeptCrops, last_arrived: float, provisional: bool) -> None:
        frames, crops = keep.chosen(self.T, track.frames)
        # ids go on from the folder's earlier runs: an id names one person in the folder's whole history
        snapshot = Track(track.id + self.start.first_id - 1, list(track.frames), list(track.boxes),
                         list(track.scores))
        if not provisional:
            with self._lock:
                self.in_flight[snapshot.id] = snapshot.first
        self.batcher.submit(Request(self, snapshot, frames, crops, provisional, last_arrived, time.monotonic()))

    def deliver(self, r: Request, probs: np.ndarray, cues: dict[str, str]) -> None:
        """Called by the batcher with a track's probabilities and what links it across cameras: its record,
        appended, and its alert events."""
        record = {"run": self.start.run, **track_record(r.track, probs, r.frames, cues, self.schema,
                                                        self.threshold)}
        now = time.monotonic()
        delay = round(now - r.last_arrived, 4) if r.last_arrived else None
        thumbs = [thumbnail_uri(c) for c in r.crops]
        record.update({"camera": self.name, "provisional": r.provisional,
                       "first_time": round(r.track.first / self.source.fps, 3),
                       "last_time": round(r.track.last / self.source.fps, 3),
                       "written_at": now_text(), "delay_s": delay,
                       "thumbnails": thumbs})
        if self.link is not None and not r.provisional:
            record["person"] = self.link.arrived(self.name, record)
        events = self.book.events(record, r.provisional)
        with self._lock:
            if not r.provisional:
                self.in_flight.pop(r.track.id, None)
            append_line(self.out / RECORDS, record)
            if not r.provisional:
                self.records += 1
                if delay is not None:
                    self.delays.append(delay)
                self.processing.append(round(now - r.closed_at, 4))
                with open(self.out / MOT, "a") as f:
                    f.write(mot_rows([r.track]))
            else:
                self.provisional += 1
            for event in events:
                append_line(self.out / ALERTS, event)
                self.events[event["event"]] += 1
        if self.on_event:
            self.on_event("record", self.name, record)
        for event in events:
            if self.webhook is not None:
                sent = record if self.cfg.webhook_thumbnails else {k: v for k, v in record.items()
                                                                   if k != "thumbnails"}
                self.webhook.post({**event, "record": sent})
            if self.on_event:
                self.on_event("alert", self.name, event)

    def oldest_open(self) -> float:
        """The earliest start (seconds since the epoch) a record of this camera still to come can have."""
        with self._lock:
            first = min([self.open_first, *self.in_flight.values()])
        return self.started + first / self.source.fps

    def summary(self) -> dict[str, Any]:
        def quantiles(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"median": None, "p95": None}
            ordered = sorted(values)
            return {"median": round(statistics.median(ordered), 4),
                    "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4)}

        return {**self.source.stats.record(), "fps": self.source.fps, "records": self.records,
                "provisional_records": self.provisional, "alerts": self.events["alert"] + self.events["confirmed"],
                "alert_events": {k: self.events[k] for k in sorted(self.events)}, "short_tracks": self.short_tracks,
                "delay_s": quantiles(self.delays), "processing_s": quantiles(self.processing)}


# --- the run -------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _stopped_by_signals(stop: Callable[[str], None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM end a live run cleanly (open tracks written, outputs finished); a second Ctrl-C too."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in old:
        signal.signal(s, lambda signum, _: stop(signal.Signals(signum).name))
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _check_history(out: Path, meta: dict[str, Any]) -> None:
    """A folder continued by this run holds records of the same attributes (else they cannot be searched together)."""
    for run in read_runs(out):
        if run.get("attributes") not in (None, meta["attributes"]):
            raise ParError(f"{out}: its run {run['run']} named other attributes (checkpoint {run.get('checkpoint')}); "
                           f"records of both could not be searched together - choose another --out")


def track_live(sources: list[str], cfg: TrackConfig, on_event: Event | None = None) -> list[dict[str, Any]]:
    """Follow each source until it ends or the run is stopped; returns each camera's tracks.json record."""
    if not sources:
        raise ParError("nothing to track: give a camera URL, a capture device or a video file")
    if cfg.annotate or cfg.save_crops:
        raise ParError("--annotate and --save-crops need the finished footage: run `par track` on the recorded file")
    check_alert_options(cfg, live=True)
    named = source_names(sources)
    for _, s in named:
        check_live_source(s)
    check_device(cfg.device)
    several = len(named) > 1
    outs = {n: Path(cfg.out) / n if several else Path(cfg.out) for n, _ in named}
    mine = for_this_rank(named)
    if cfg.link and (not several or len(mine) < len(named)):
        raise ParError("--link links the records of several cameras followed by one process: give two or more "
                       "cameras, and run it without torchrun (or link the folders afterwards with `par link`)")
    if cfg.alert_route and not cfg.link:
        raise ParError("--alert-route follows a person from camera to camera: give --link too")
    routes = parse_routes(cfg.alert_route, [n for n, _ in named]) if cfg.link else []
    if several:  # refused before connecting to anything
        check_cameras_dir(Path(cfg.out), [n for n, _ in named])
    else:
        check_camera_dir(Path(cfg.out))
    rt = load_runtime(cfg.checkpoint, cfg.runtime, cfg.pretrained, cfg.device)
    meta = {**rt.meta, "runtime": rt.record()}
    schema = schema_from_dict(meta["schema_definition"])
    rules = parse_alerts(cfg.alerts, schema)
    T = cfg.frames or meta["eval_frames"]
    if cfg.keep_crops < T:
        raise ParError(f"--keep-crops {cfg.keep_crops} is fewer than the {T} frames a track's attributes need; give "
                       f"at least {T}")
    for name, _ in mine:
        _check_history(outs[name], meta)
    options = TrackerOptions(cfg.activation, cfg.high_confidence, cfg.match_iou, cfg.confirm_frames, cfg.lost_frames)
    live = [LiveSource(s, reconnect=cfg.reconnect, speed=cfg.speed, timeout=cfg.stream_timeout) for _, s in mine]
    def stop(why: str) -> None:
        for src in live:
            src.stop(f"stopped by {why}")

    with contextlib.ExitStack() as held, _stopped_by_signals(stop):
        held.callback(stop, "an error")  # whatever ends this block ends the readers too
        shared_detector = make_detector(cfg) if cfg.detector.startswith("torchvision") else None
        detectors = [shared_detector or make_detector(cfg) for _ in mine]
        trackers = [PersonTracker(options) for _ in mine]
        for src in live:  # a source that never gives video is one line, before any output exists
            src.start()
        if several:
            claim_cameras_dir(Path(cfg.out), [n for n, _ in named],
                              [LINKS] * cfg.link + [ROUTE_ALERTS] * bool(routes))
        starts = {}
        for (name, _), src in zip(mine, live):
            claim_dir(outs[name], LIVE_KIND)
            held.enter_context(exclusive(outs[name], "live track"))
            starts[name] = start_run(outs[name], {"source": src.name, "checkpoint": meta["_path"],
                                                  "checkpoint_sha256": meta["weights_sha256"],
                                                  "runtime": meta["runtime"], "attributes": meta["attributes"],
                                                  "pid": os.getpid()})
            if rules:  # there from the start: an empty alerts.jsonl says no rule has fired yet
                append_line(outs[name] / ALERTS, None)
        webhook = Webhook(cfg.alert_webhook, retries=cfg.webhook_retries) if cfg.alert_webhook else None
        batcher = AttributeBatcher(rt, cfg.batch_size)
        cameras = [Camera(name, src, outs[name], det, tracker, options, cfg, T, schema, meta["threshold"], batcher,
                          AlertBook(rules, cfg.early_alerts, {"camera": name, "run": starts[name].run}), webhook,
                          on_event, starts[name])
                   for (name, _), src, det, tracker in zip(mine, live, detectors, trackers)]
        link = _live_link(cfg, cameras, meta, routes, webhook, on_event) if cfg.link else None
        threads = [threading.Thread(target=c.run, name=f"camera {c.name}", daemon=True) for c in cameras]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.2)  # short waits, so that a signal reaches its handler
            if batcher.error is not None or any(c.error for c in cameras):
                stop("an error")
        batcher.close()
        failed = next((c.error for c in cameras if c.error is not None), None)
        if failed is not None:
            raise failed
        delivery = webhook.close() if webhook else None
        linked = link.finish() if link else None
        docs = [_finish(c, meta, delivery, linked) for c in cameras]
    for src in live:
        src.join()
    return docs


def _live_link(cfg: TrackConfig, cameras: list[Camera], meta: dict[str, Any], routes: list[tuple[str, ...]],
               webhook: Webhook | None, on_event: Event | None) -> LiveLink:
    """The run's linker on the clock `par link` reads from the cameras' runs.jsonl; its route alerts go where the
    cameras' alerts go."""
    def on_alert(alert: dict[str, Any]) -> None:
        if webhook is not None:
            webhook.post(alert)
        if on_event is not None:
            on_event("alert", alert["camera"], alert)

    for c in cameras:
        c.started = epoch_of(next(r["started_at"] for r in read_runs(c.out) if r["run"] == c.start.run))
    link = LiveLink(Path(cfg.out), {c.name: (c.start.run, c.started) for c in cameras}, meta["attributes"],
                    [g.name for g in cameras[0].schema.groups], default_rules(),
                    lambda: min(c.oldest_open() for c in cameras), routes, on_alert)
    for c in cameras:
        c.link = link
    return link


def _finish(camera: Camera, meta: dict[str, Any], webhook: dict[str, Any] | None,
            linked: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's end in runs.jsonl, then the folder's summaries from every run's records: each track's last record
    (a provisional one only if it never closed; with --link, this run's tracks with their person as the run ended),
    this run's MOT rows in frame order, the page."""
    summary = {**camera.summary(), "camera": camera.name, "keep_crops": camera.cfg.keep_crops,
               "update_every": camera.cfg.update_every, "alert_rules": [r.text for r in camera.book.rules],
               "early_alerts": camera.book.early, "webhook": webhook,
               **({"link": linked} if linked is not None else {})}
    end_run(camera.out, camera.start.run, summary)
    path = camera.out / RECORDS
    tracks = read_live_records(path) if path.is_file() else []
    if camera.link is not None:
        for t in tracks:
            person = camera.link.people.get((camera.name, t.get("run"), t["id"]))
            if person is not None:
                t["person"] = person
    thumbnails = {r["id"]: r.pop("thumbnails") for r in tracks}
    doc = {"format": TRACKS_FORMAT, "version": TRACKS_VERSION, "source": camera.source.name, "fps": camera.source.fps,
           "frames_read": camera.source.stats.frames_read, "stopped": None, "checkpoint": meta["_path"],
           "checkpoint_sha256": meta["weights_sha256"], "runtime": meta["runtime"], "threshold": meta["threshold"],
           "detector": camera.detector.record(), "tracker": camera.options.record(),
           "min_track_frames": camera.cfg.min_track_frames, "frames_per_track": camera.T,
           "attributes": meta["attributes"], "groups": [g.name for g in camera.schema.groups], "tracks": tracks,
           "run": camera.start.run, "live": {**summary, "run": camera.start.run},
           "runs": read_runs(camera.out)}
    atomic_write(camera.out / "tracks.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))
    atomic_write(camera.out / "tracks.csv",
                 lambda tmp: tmp.write_text(tracks_csv(tracks, camera.schema, meta["attributes"])))
    mot = camera.out / MOT
    if mot.is_file():  # the earlier runs' rows as they are, then this run's by frame
        data = mot.read_bytes()
        head, rows = data[:camera.start.mot_offset], data[camera.start.mot_offset:].decode().splitlines(keepends=True)
        rows.sort(key=lambda line: tuple(int(v) for v in line.split(",", 2)[:2]))
        atomic_write(mot, lambda tmp: tmp.write_bytes(head + "".join(rows).encode()))
    atomic_write(camera.out / "tracks.html", lambda tmp: tmp.write_text(tracks_html(doc, thumbnails)))
    return doc
