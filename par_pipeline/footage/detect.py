"""Person detectors for `par track`, one small interface: `detect(index, rgb) -> Detections` for each frame in order.

- `FileDetections`: a detector's output brought along, MOTChallenge rows `frame,id,x,y,w,h,conf,...` (det.txt; a
  gt.txt's boxes work too: its class column, when there, keeps pedestrians only).
- `MotionDetector`: background subtraction for a fixed camera, no weights at all: a running-median background,
  the pixels that differ from it, cleaned and grouped into blobs. The baseline that works offline on any static
  CCTV; people who overlap become one blob, and someone who stands still fades into the background.
- `TorchvisionDetector`: torchvision's COCO detectors (`data_manifests/detectors/torchvision.json`) from a local
  weights file whose sha256 is recorded; COCO's person class above a score threshold; frames batched on the device.
- `YoloDetector` (footage/yolo.py): YOLO-family graphs exported by Ultralytics, under ONNX Runtime or OpenVINO.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ..errors import ParError
from ..model.state import unwrap_state_dict
from ..outputs import file_sha256
from ..resources import load_json

if TYPE_CHECKING:
    from ..config import TrackConfig


@dataclass
class Detections:
    boxes: np.ndarray  # [N, 4] float32 x0, y0, x1, y1 in pixels
    scores: np.ndarray  # [N] float32

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


# the MOTChallenge columns par reads, in file order
MOT_COLUMNS = ("frame", "id", "x", "y", "w", "h", "conf", "class")


@dataclass
class FileDetections:
    """Per frame (0-based) the rows of a MOTChallenge file: `frame` counts from 1 there."""
    path: Path
    by_frame: dict[int, Detections] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> "FileDetections":
        path = Path(path)
        if not path.is_file():
            raise ParError(f"{path}: detections file not found")
        rows: dict[int, list[tuple[float, ...]]] = {}
        ids: dict[int, set[int]] = {}
        with open(path) as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                parts = line.replace(" ", "").strip().split(",")
                try:
                    values = [float(v) for v in parts]
                except ValueError:
                    raise ParError(f"{where}: not a MOTChallenge row of numbers (frame,id,x,y,w,h,conf,...): "
                                   f"{line.strip()[:60]!r}; fix the row") from None
                if len(values) < 6:
                    raise ParError(f"{where}: {len(values)} columns; a MOTChallenge row has at least frame,id,x,y,w,h")
                bad = [name for name, v in zip(MOT_COLUMNS, values) if not math.isfinite(v)]
                if bad:
                    raise ParError(f"{where}: {', '.join(bad)} not a finite number ({line.strip()[:60]!r}); fix or "
                                   f"remove the row")
                frame, ident, x, y, w, h = values[:6]
                if frame < 1 or frame != int(frame):
                    raise ParError(f"{where}: frame {frame:g}; frames count from 1")
                if w <= 0 or h <= 0:
                    raise ParError(f"{where}: box of width {w:g} and height {h:g}; sizes must be positive")
                if len(values) >= 8 and values[7] not in (-1, 1):  # gt.txt: class 1 is a pedestrian
                    continue
                if ident >= 0:
                    seen = ids.setdefault(int(frame), set())
                    if int(ident) in seen:
                        raise ParError(f"{where}: id {int(ident)} appears twice in frame {int(frame)}; an id is one "
                                       f"box per frame")
                    seen.add(int(ident))
                conf = values[6] if len(values) >= 7 and values[6] >= 0 else 1.0
                rows.setdefault(int(frame) - 1, []).append((x, y, x + w, y + h, conf))
        det = cls(path)
        for frame, boxes in rows.items():
            a = np.array(boxes, dtype=np.float32)
            det.by_frame[frame] = Detections(a[:, :4], a[:, 4])
        return det

    def record(self) -> dict[str, Any]:
        return {"kind": "file", "name": self.path.name, "sha256": file_sha256(self.path)}

    def detect(self, index: int, rgb: np.ndarray) -> Detections:
        return self.by_frame.get(index, Detections.empty())


class MotionDetector:
    """Foreground blobs against a running-median background (the last `history` sampled frames)."""

    def __init__(self, threshold: float = 30.0, min_height: int = 24, history: int = 25, every: int = 5):
        from scipy import ndimage  # noqa: F401 (imported now, not in the first frame of a live stream)

        self.threshold, self.min_height, self.history, self.every = threshold, min_height, history, every
        self.samples: list[np.ndarray] = []
        self.background: np.ndarray | None = None

    def record(self) -> dict[str, Any]:
        return {"kind": "motion", "threshold": self.threshold, "min_height": self.min_height,
                "history": self.history, "every": self.every}

    def detect(self, index: int, rgb: np.ndarray) -> Detections:
        from scipy import ndimage

        gray = rgb.astype(np.int16)
        if index % self.every == 0 or self.background is None:
            self.samples = (self.samples + [gray])[-self.history:]
            self.background = np.median(np.stack(self.samples), axis=0).astype(np.int16)
        if len(self.samples) < 3:  # too little history for a background yet
            return Detections.empty()
        moving = np.abs(gray - self.background).max(axis=2) > self.threshold
        moving = ndimage.binary_opening(moving, iterations=1)
        moving = ndimage.binary_closing(moving, structure=np.ones((5, 3)), iterations=2)
        labels, _ = ndimage.label(moving)
        boxes, scores = [], []
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            if sl is None:
                continue
            h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
            if h < self.min_height or w < 3:
                continue
            fill = float((labels[sl] == k).mean())
            boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
            scores.append(min(1.0, 0.5 + fill))  # a solid blob is more likely a person than a sliver of noise
        if not boxes:
            return Detections.empty()
        return Detections(np.array(boxes, dtype=np.float32), np.array(scores, dtype=np.float32))


class TorchvisionDetector:
    """A torchvision COCO detector with local weights; `detect_batch` runs several frames at once."""

    def __init__(self, name: str, weights: str | None, allow_random: bool, threshold: float, device: str,
                 min_height: int = 24):
        import torch
        import torchvision.models.detection as detection

        spec = load_json("detectors", "torchvision")
        if name not in spec["models"]:
            raise ParError(f"--detector torchvision:{name}: unknown; one of {sorted(spec['models'])}")
        self.name, self.threshold, self.min_height = name, threshold, min_height
        self.person = int(spec["person_label"])
        with torch.random.fork_rng():  # random weights (tests) are the same every run; the caller's RNG is untouched
            torch.manual_seed(0)
            model = getattr(detection, name)(weights=None, weights_backbone=None,
                                             num_classes=int(spec["num_classes"]))
        if weights is None:
            if not allow_random:
                raise ParError(f"--detector torchvision:{name} needs --detector-weights FILE (torchvision's COCO "
                               f"checkpoint of {name}); random weights only with --allow-random-detector, for tests")
            self.weights = {"kind": "random-init"}
        else:
            path = Path(weights)
            if not path.is_file():
                raise ParError(f"{path}: detector weights file not found")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # not a torch file: many types
                raise ParError(f"{path}: cannot read detector weights ({type(exc).__name__}); give torchvision's "
                               f"checkpoint of {name}") from None
            try:
                model.load_state_dict(unwrap_state_dict(state)[0])
            except (RuntimeError, AttributeError, TypeError) as exc:
                raise ParError(f"{path}: these weights are not a {name} ({_first_line(exc)}); give torchvision's "
                               f"checkpoint of that architecture") from None
            self.weights = {"kind": "file", "name": path.name, "sha256": file_sha256(path)}
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def record(self) -> dict[str, Any]:
        return {"kind": f"torchvision:{self.name}", "weights": self.weights, "threshold": self.threshold,
                "min_height": self.min_height}

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        import torch

        with torch.inference_mode():
            images = [torch.from_numpy(f if f.flags.writeable else f.copy()).to(self.device).permute(2, 0, 1).float()
                      / 255 for f in frames]  # frames read from images are read-only arrays
            outputs = self.model(images)
        found = []
        for out in outputs:
            keep = (out["labels"] == self.person) & (out["scores"] >= self.threshold)
            boxes, scores = out["boxes"][keep].float().cpu().numpy(), out["scores"][keep].float().cpu().numpy()
            tall = (boxes[:, 3] - boxes[:, 1]) >= self.min_height
            found.append(Detections(boxes[tall].astype(np.float32), scores[tall].astype(np.float32)))
        return found

    def detect(self, index: int, rgb: np.ndarray) -> Detections:
        return self.detect_batch([rgb])[0]


def detections_of(detector: Any, frames: Iterator[tuple[int, np.ndarray]], batch: int
                  ) -> Iterator[tuple[int, np.ndarray, Detections]]:
    """(index, rgb, detections) for each frame, in order; batched where the detector can batch."""
    if not hasattr(detector, "detect_batch"):
        for index, rgb in frames:
            yield index, rgb, detector.detect(index, rgb)
        return
    pending: list[tuple[int, np.ndarray]] = []
    for item in frames:
        pending.append(item)
        if len(pending) == batch:
            yield from ((i, f, d) for (i, f), d in zip(pending, detector.detect_batch([f for _, f in pending])))
            pending = []
    if pending:
        yield from ((i, f, d) for (i, f), d in zip(pending, detector.detect_batch([f for _, f in pending])))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


def make_detector(cfg: "TrackConfig") -> Any:
    """The detector `par track` options name (recorded and live)."""
    if cfg.detections is not None:
        return FileDetections.read(cfg.detections)
    if cfg.detector == "motion":
        return MotionDetector(cfg.motion_threshold, cfg.min_height)
    kind, _, name = cfg.detector.partition(":")
    if kind in ("onnx", "openvino") and name:
        from .yolo import YoloDetector

        return YoloDetector(kind, name, cfg.detector_threshold, cfg.detector_iou, cfg.person_class, cfg.device,
                            cfg.min_height)
    if kind != "torchvision" or not name:
        raise ParError(f"--detector {cfg.detector}: give motion, torchvision:NAME, onnx:FILE or openvino:FILE (or "
                       f"--detections FILE)")
    return TorchvisionDetector(name, cfg.detector_weights, cfg.allow_random_detector, cfg.detector_threshold,
                               cfg.device, cfg.min_height)
