"""Tracks of people over a video: ByteTrack as the `trackers` package (Roboflow, Apache-2.0) implements it, and the
boxes each track was seen with. A track that has not been matched for `lost_frames` frames is closed: the tracker
forgets it and only its boxes remain (a few numbers per frame), so memory does not grow with the video's length
beyond them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..data.sampling import sample_frames
from .detect import Detections


@dataclass
class Track:
    id: int  # from 1, as MOTChallenge numbers them
    frames: list[int] = field(default_factory=list)  # 0-based frame indices, increasing
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # x0, y0, x1, y1
    scores: list[float] = field(default_factory=list)

    @property
    def first(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        return self.frames[-1]


@dataclass(frozen=True)
class TrackerOptions:
    activation: float = 0.5  # a detection this confident may start a track
    high_confidence: float = 0.6  # ByteTrack's first-stage threshold (the rest are matched second)
    match_iou: float = 0.2  # minimum IoU of a detection with a track's predicted box
    confirm_frames: int = 2  # consecutive matches before a track gets an id
    lost_frames: int = 30  # frames a lost track is kept for re-association, then closed

    def record(self) -> dict[str, Any]:
        return {"library": "trackers (ByteTrack)", **self.__dict__}


class PersonTracker:
    def __init__(self, options: TrackerOptions):
        import supervision  # noqa: F401 (update's; imported now, not in the first frame of a live stream)
        from trackers import ByteTrackTracker

        self.options = options
        # frame_rate 30 makes `lost_track_buffer` a number of frames, whatever the video's rate
        self.tracker = ByteTrackTracker(lost_track_buffer=options.lost_frames, frame_rate=30.0,
                                        track_activation_threshold=options.activation,
                                        minimum_consecutive_frames=options.confirm_frames,
                                        minimum_iou_threshold=options.match_iou,
                                        high_conf_det_threshold=options.high_confidence)
        self.open: dict[int, Track] = {}
        self.closed: list[Track] = []

    def update(self, index: int, found: Detections) -> list[tuple[int, tuple[float, float, float, float]]]:
        """Associate frame `index`'s detections; returns (track id, box) of the tracks seen in it."""
        import supervision as sv

        det = sv.Detections(xyxy=found.boxes.astype(np.float64).reshape(-1, 4),
                            confidence=found.scores.astype(np.float64))
        out = self.tracker.update(det)
        seen = []
        for box, tid, score in zip(out.xyxy, out.tracker_id, _scores(out)):
            if int(tid) < 0:  # not confirmed yet
                continue
            track = self.open.setdefault(int(tid) + 1, Track(int(tid) + 1))
            b = tuple(float(v) for v in box)
            track.frames.append(index)
            track.boxes.append(b)  # type: ignore[arg-type]
            track.scores.append(float(score))
            seen.append((track.id, b))
        for tid in [t for t, track in self.open.items() if index - track.last > self.options.lost_frames]:
            self.closed.append(self.open.pop(tid))
        return seen

    def take_closed(self) -> list[Track]:
        """The tracks closed since the last call, handed over and forgotten (a live run keeps no finished track)."""
        closed, self.closed = self.closed, []
        return closed

    def pass_time(self, after: int, frames: int) -> None:
        """The `frames` frames after frame `after` went by without video (dropped, or the stream away): the tracker
        predicts through them, and tracks unmatched for longer than `lost_frames` close. Beyond that many, more
        empty frames change nothing, so at most lost_frames + 1 are stepped."""
        for k in range(1, min(frames, self.options.lost_frames + 1) + 1):
            self.update(after + k, Detections.empty())

    def finish(self) -> list[Track]:
        """Every track, closed or still open, by id."""
        return sorted([*self.closed, *self.open.values()], key=lambda t: t.id)


def _scores(det: Any) -> np.ndarray:
    return det.confidence if det.confidence is not None else np.ones(len(det.xyxy))


class KeptCrops:
    """At most `limit` crops of a track, evenly spread over it however long it grows (every `stride`-th of its frames
    is kept; when that makes more than `limit`, every other kept crop goes and the stride doubles), and its latest.
    A track no longer than `limit` keeps every crop, so its attributes come from exactly the frames `par track` on
    the recorded file uses."""

    def __init__(self, limit: int):
        self.limit, self.stride, self.seen = limit, 1, 0
        self.frames: list[int] = []
        self.crops: list[Any] = []  # PIL images of the boxes
        self.latest: tuple[int, Any] | None = None  # the last frame's, whatever the stride: a track's end is chosen

    def add(self, frame: int, crop: Callable[[], Any]) -> None:
        image = crop()
        self.latest = (frame, image)
        if self.seen % self.stride == 0:
            self.frames.append(frame)
            self.crops.append(image)
            if len(self.frames) > self.limit:
                self.frames, self.crops = self.frames[::2], self.crops[::2]
                self.stride *= 2
        self.seen += 1

    def chosen(self, T: int, track_frames: list[int]) -> tuple[list[int], list[Any]]:
        """The crops of the T frames `par eval`'s rule picks among the track's frames (what the recorded file's run
        uses), or where those were thinned away, the nearest kept ones; and their frames."""
        frames, crops = list(self.frames), list(self.crops)
        if self.latest is not None and (not frames or frames[-1] != self.latest[0]):
            frames.append(self.latest[0])
            crops.append(self.latest[1])
        kept = np.asarray(frames)
        picks = []
        for k in sample_frames(len(track_frames), T, None).tolist():
            picks.append(int(np.abs(kept - track_frames[k]).argmin()))
        return [frames[k] for k in picks], [crops[k] for k in picks]
