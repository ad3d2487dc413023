"""`par track` on live footage: cameras (RTSP/RTMP/HTTP/UDP streams, capture devices) and files played as streams
(`--live`), in one pass with bounded memory, each person's record written as they leave.

Per camera a thread runs decode (its own reader thread, footage.stream) -> detect -> track. Each open track keeps at
most `keep_crops` crops, thinned evenly as it grows (`KeptCrops`), so they always span it; when the tracker closes a
track (unmatched for `lost_frames`), T evenly spaced kept crops go to the one `AttributeBatcher` all cameras share (the
checkpoint's CLIP + fusion model, in full batches), and the record is appended to OUT/tracks.jsonl (one line, flushed:
a reader never sees half a line) with its MOTChallenge rows to tracks.txt. A record that matches an `--alert` rule
prints an alert, goes to alerts.jsonl and, with `--alert-webhook`, is POSTed by a thread of its own (timeouts,
retries with backoff; never blocking the video). At the end (the stream over, Ctrl-C or SIGTERM: open tracks are
closed and written first) tracks.json, tracks.csv, tracks.txt and tracks.html are written as for a file. OUT is par's
own folder (`live tracks`), locked while the run lasts.
"""
from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from ..config import TrackConfig, check_device
from ..data.preprocess import prepare_image
from ..data.schema import AttributeSchema, schema_from_dict
from ..errors import ParError, masked
from ..footage import LIVE_RECORDS, TRACKS_FORMAT, TRACKS_VERSION, read_live_records
from ..footage.stream import Gap, LiveSource, check_live_source
from ..footage.tracking import KeptCrops, PersonTracker, Track, TrackerOptions
from ..model.checkpoint import load_checkpoint
from ..model.clip import encoder_for_checkpoint
from ..outputs import atomic_write, check_dir_target, claim_dir, exclusive, mark_own, read_marker, remove_own
from ..pages.render import thumbnail_uri
from ..pages.tracks_page import tracks_html
from ..store.codec import TokenCodec
from .search import Condition, match, parse_condition
from .track import crop_box, make_detector, mot_rows, track_probabilities, track_record, tracks_csv

LIVE_KIND = "live tracks"
RECORDS, MOT, ALERTS = LIVE_RECORDS, "tracks.txt", "alerts.jsonl"
LIVE_FILES = (RECORDS, MOT, ALERTS, "tracks.json", "tracks.csv", "tracks.html")
WEBHOOK_TIMEOUT_S, WEBHOOK_RETRIES = 5.0, 3  # per POST; retried after 0.25, 0.5, 1 s
FINISH_WAIT_S = 30.0  # at the end, how long the webhook's queue may take to drain

Event = Callable[[str, str, dict[str, Any]], None]  # (kind: frames|record|alert, camera, payload)


# --- alerts --------------------------------------------------------------------------------------------------------

@dataclass
class AlertRule:
    text: str
    conditions: list[Condition]


def parse_alerts(rules: list[str], schema: AttributeSchema) -> list[AlertRule]:
    """`--alert "top color = red, backpack"`: all of a rule's conditions must hold (each in `par search`'s grammar)."""
    groups = [g.name for g in schema.groups]
    parsed = []
    for rule in rules:
        parts = [c for c in rule.split(",") if c.strip()]
        if not parts:
            raise ParError(f"--alert {rule!r}: give conditions such as \"top color = red, backpack\"")
        parsed.append(AlertRule(rule.strip(), [parse_condition(c, groups, schema.attributes) for c in parts]))
    return parsed


class Webhook:
    """POSTs alerts as JSON from a thread of its own: a slow or failing server never holds the video loop."""

    def __init__(self, url: str):
        if not url.lower().startswith(("http://", "https://")):
            raise ParError(f"--alert-webhook {masked(url)}: give an http:// or https:// URL")
        self.url, self.name = url, masked(url)
        self.sent, self.failed, self.retried, self.last_error = 0, 0, 0, ""
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def post(self, payload: dict[str, Any]) -> None:
        self._queue.put(payload)

    def _run(self) -> None:
        while (payload := self._queue.get()) is not None:
            body = json.dumps(payload).encode()
            for attempt in range(WEBHOOK_RETRIES + 1):
                try:
                    request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as answer:
                        answer.read()
                    self.sent += 1
                    break
                except (OSError, ValueError) as exc:  # urllib's HTTPError and URLError are OSErrors
                    self.last_error = masked(f"{type(exc).__name__}: {exc}")[:200]
                    if attempt == WEBHOOK_RETRIES:
                        self.failed += 1
                    else:
                        self.retried += 1
                        time.sleep(0.25 * 2 ** attempt)

    def close(self) -> dict[str, Any]:
        """Waits up to FINISH_WAIT_S for the alerts still queued; says what was delivered."""
        self._queue.put(None)
        self._thread.join(FINISH_WAIT_S)
        left = self._queue.qsize()
        return {"url": self.name, "sent": self.sent, "failed": self.failed, "retries": self.retried,
                "undelivered": left, "last_error": self.last_error}


# --- attributes of closed tracks -----------------------------------------------------------------------------------

@dataclass
class Request:
    camera: "Camera"
    track: Track
    frames: list[int]
    crops: list[Image.Image]
    provisional: bool
    last_arrived: float  # monotonic time of the track's last frame
    closed_at: float


class AttributeBatcher:
    """One CLIP + fusion model for every camera: requests (T crops of a track) are gathered into batches of up to
    `batch_size` crops, so a GPU sees full batches however many cameras feed it."""

    def __init__(self, model: torch.nn.Module, enc: Any, codec: TokenCodec, device: str, batch_size: int):
        self.model, self.enc, self.codec, self.device, self.batch_size = model, enc, codec, device, batch_size
        self.error: BaseException | None = None
        self.batches = 0
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="attributes", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        done = False
        while not done:
            first = self._queue.get()
            if first is None:
                return
            requests, crops = [first], len(first.crops)
            while crops < self.batch_size:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                requests.append(more)
                crops += len(more.crops)
            try:
                self._answer(requests)
            except BaseException as exc:  # handed to the video loops, which stop with it
                self.error = exc
                return

    @torch.no_grad()
    def _answer(self, requests: list[Request]) -> None:
        images = np.stack([prepare_image(c, self.enc.preprocess) for r in requests for c in r.crops])
        chunks = [torch.from_numpy(images[k:k + self.batch_size]) for k in range(0, len(images), self.batch_size)]
        feats = torch.cat([self.codec.round_trip(self.enc.encode_frames(c)).cpu() for c in chunks])  # as stored
        self.batches += 1
        at = 0
        for r in requests:
            tokens = feats[at:at + len(r.crops)]
            at += len(r.crops)
            r.camera.deliver(r, track_probabilities(self.model, tokens, self.device))


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
    rules: list[AlertRule]
    webhook: Webhook | None
    on_event: Event | None
    records: int = 0
    provisional: int = 0
    alerts: int = 0
    short_tracks: int = 0
    last_index: int = -1
    delays: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)
    error: BaseException | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _alerted: set[tuple[int, str]] = field(default_factory=set)

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
        for track in list(tracker.open.values()):  # the stream is over: who is still in view leaves now
            self._close(track, kept.pop(track.id, None), arrived.pop(track.id, 0.0))

    def _close(self, track: Track, keep: KeptCrops | None, last_arrived: float) -> None:
        if keep is None or len(track.frames) < self.cfg.min_track_frames:
            self.short_tracks += 1
            return
        self._submit(track, keep, last_arrived, provisional=False)

    def _submit(self, track: Track, keep: KeptCrops, last_arrived: float, provisional: bool) -> None:
        frames, crops = keep.chosen(self.T)
        snapshot = Track(track.id, list(track.frames), list(track.boxes), list(track.scores))
        self.batcher.submit(Request(self, snapshot, frames, crops, provisional, last_arrived, time.monotonic()))

    def deliver(self, r: Request, probs: np.ndarray) -> None:
        """Called by the batcher with a track's probabilities: its record, appended, and its alerts."""
        record = track_record(r.track, probs, r.frames, self.schema, self.threshold)
        now = time.monotonic()
        delay = round(now - r.last_arrived, 4) if r.last_arrived else None
        thumbs = [thumbnail_uri(c) for c in r.crops]
        record.update({"camera": self.name, "provisional": r.provisional,
                       "first_time": round(r.track.first / self.source.fps, 3),
                       "last_time": round(r.track.last / self.source.fps, 3),
                       "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "delay_s": delay,
                       "thumbnails": thumbs})
        fired = []
        for rule in self.rules:
            found = match(rule.conditions, record)
            if found is not None and (r.track.id, rule.text) not in self._alerted:
                self._alerted.add((r.track.id, rule.text))
                fired.append({"format": "par-alert", "version": 1, "camera": self.name, "rule": rule.text,
                              "track": r.track.id, "score": found[0], "scores": found[1], "line": record["line"],
                              "provisional": r.provisional, "first_frame": record["first_frame"],
                              "last_frame": record["last_frame"], "written_at": record["written_at"]})
        with self._lock:
            _append_line(self.out / RECORDS, record)
            if not r.provisional:
                self.records += 1
                if delay is not None:
                    self.delays.append(delay)
                self.processing.append(round(now - r.closed_at, 4))
                with open(self.out / MOT, "a") as f:
                    f.write(mot_rows([r.track]))
            else:
                self.provisional += 1
            for alert in fired:
                _append_line(self.out / ALERTS, alert)
                self.alerts += 1
        if self.on_event:
            self.on_event("record", self.name, record)
        for alert in fired:
            if self.webhook is not None:
                self.webhook.post({**alert, "record": record})
            if self.on_event:
                self.on_event("alert", self.name, alert)

    def summary(self) -> dict[str, Any]:
        def quantiles(values: list[float]) -> dict[str, float | None]:
            if not values:
                return {"median": None, "p95": None}
            ordered = sorted(values)
            return {"median": round(statistics.median(ordered), 4),
                    "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 4)}

        return {**self.source.stats.record(), "fps": self.source.fps, "records": self.records,
                "provisional_records": self.provisional, "alerts": self.alerts, "short_tracks": self.short_tracks,
                "delay_s": quantiles(self.delays), "processing_s": quantiles(self.processing)}


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    """One whole line per write (O_APPEND), so a reader of the file sees whole records only."""
    line = (json.dumps(obj) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


# --- the run -------------------------------------------------------------------------------------------------------

def source_names(sources: list[str]) -> list[tuple[str, str]]:
    """(name, source) of each: `NAME=SOURCE` names it; otherwise a file's stem, a URL's last path part or host."""
    named = []
    for s in sources:
        head, sep, rest = s.partition("=")
        if sep and "://" not in head and "/" not in head:
            named.append((head, rest))
            continue
        if "://" in s:
            path = s.split("://", 1)[1].split("?")[0]
            host, _, tail = path.rpartition("@")[2].partition("/")
            name = Path(tail).stem if tail.strip("/") else host.split(":")[0]
        else:
            name = Path(s).stem
        named.append((name or "camera", s))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ParError(f"two sources share the name {sorted(n for n in names if names.count(n) > 1)[0]!r}; each "
                       f"writes OUT/<name>/ - name them NAME=SOURCE")
    return named


def for_this_rank(named: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Under torchrun, rank r of W follows sources r, r + W, ... (each camera once across the machines)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return named[rank::world]


def check_live_dir(out: Path) -> None:
    """OUT may be a new or empty folder, or an earlier live output of par's holding only what par wrote."""
    if out.is_dir() and read_marker(out) is not None:
        check_dir_target(out, LIVE_KIND)  # par's own: of this kind, with nothing but what par wrote
    elif out.exists() and not out.is_dir():
        raise ParError(f"{out}: exists and is a file; a live run writes a folder - choose another --out")
    elif out.is_dir() and any(out.iterdir()):
        raise ParError(f"{out}: exists, is not empty and was not written by par; par does not write into folders it "
                       f"did not create - choose another --out")


def claim_live_dir(out: Path) -> None:
    """OUT as par's own live folder; the files of an earlier live run there (par's own) go."""
    check_live_dir(out)
    claim_dir(out, LIVE_KIND)
    for name in LIVE_FILES:
        remove_own(out / name)
    mark_own(out, LIVE_KIND, list(LIVE_FILES))


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


def track_live(sources: list[str], cfg: TrackConfig, on_event: Event | None = None) -> list[dict[str, Any]]:
    """Follow each source until it ends or the run is stopped; returns each camera's tracks.json record."""
    if not sources:
        raise ParError("nothing to track: give a camera URL, a capture device or a video file")
    if cfg.annotate or cfg.save_crops:
        raise ParError("--annotate and --save-crops need the finished footage: run `par track` on the recorded file")
    named = source_names(sources)
    for _, s in named:
        check_live_source(s)
    check_device(cfg.device)
    outs = {n: Path(cfg.out) if len(named) == 1 else Path(cfg.out) / n for n, _ in named}
    mine = for_this_rank(named)
    model, meta = load_checkpoint(cfg.checkpoint, cfg.device)
    schema = schema_from_dict(meta["schema_definition"])
    rules = parse_alerts(cfg.alerts, schema)
    T = cfg.frames or meta["eval_frames"]
    if cfg.keep_crops < T:
        raise ParError(f"--keep-crops {cfg.keep_crops} is fewer than the {T} frames a track's attributes need; give "
                       f"at least {T}")
    for name, _ in mine:  # refused before connecting to anything
        check_live_dir(outs[name])
    enc = encoder_for_checkpoint(meta, cfg.pretrained, cfg.device)
    options = TrackerOptions(cfg.activation, cfg.high_confidence, cfg.match_iou, cfg.confirm_frames, cfg.lost_frames)
    live = [LiveSource(s, reconnect=cfg.reconnect, speed=cfg.speed) for _, s in mine]

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
        for name, _ in mine:
            claim_live_dir(outs[name])
            held.enter_context(exclusive(outs[name], "live track"))
        webhook = Webhook(cfg.alert_webhook) if cfg.alert_webhook else None
        batcher = AttributeBatcher(model, enc, TokenCodec(meta["store_identity"]["dtype"]), cfg.device,
                                   cfg.batch_size)
        cameras = [Camera(name, src, outs[name], det, tracker, options, cfg, T, schema, meta["threshold"], batcher,
                          rules, webhook, on_event) for (name, _), src, det, tracker in zip(mine, live, detectors,
                                                                                            trackers)]
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
        docs = [_finish(c, meta, delivery) for c in cameras]
    for src in live:
        src.join()
    return docs


def _finish(camera: Camera, meta: dict[str, Any], webhook: dict[str, Any] | None) -> dict[str, Any]:
    """The whole-run outputs from tracks.jsonl: each track's last record (a provisional one only if it never
    closed), MOT rows by frame, the page."""
    path = camera.out / RECORDS
    tracks = read_live_records(path) if path.is_file() else []
    thumbnails = {r["id"]: r.pop("thumbnails") for r in tracks}
    doc = {"format": TRACKS_FORMAT, "version": TRACKS_VERSION, "source": camera.source.name, "fps": camera.source.fps,
           "frames_read": camera.source.stats.frames_read, "stopped": None, "checkpoint": meta["_path"],
           "detector": camera.detector.record(), "tracker": camera.options.record(),
           "min_track_frames": camera.cfg.min_track_frames, "frames_per_track": camera.T,
           "attributes": meta["attributes"], "groups": [g.name for g in camera.schema.groups], "tracks": tracks,
           "live": {**camera.summary(), "camera": camera.name, "keep_crops": camera.cfg.keep_crops,
                    "update_every": camera.cfg.update_every, "alert_rules": [r.text for r in camera.rules],
                    "webhook": webhook}}
    atomic_write(camera.out / "tracks.json", lambda tmp: tmp.write_text(json.dumps(doc, indent=1) + "\n"))
    atomic_write(camera.out / "tracks.csv",
                 lambda tmp: tmp.write_text(tracks_csv(tracks, camera.schema, meta["attributes"])))
    rows = (camera.out / MOT).read_text().splitlines(keepends=True) if (camera.out / MOT).is_file() else []
    rows.sort(key=lambda line: tuple(int(v) for v in line.split(",", 2)[:2]))
    atomic_write(camera.out / MOT, lambda tmp: tmp.write_text("".join(rows)))
    atomic_write(camera.out / "tracks.html", lambda tmp: tmp.write_text(tracks_html(doc, thumbnails)))
    return doc
