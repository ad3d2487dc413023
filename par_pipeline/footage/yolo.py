"""Person detectors from files (`--detector onnx:FILE`, `openvino:FILE`): YOLO-family graphs as Ultralytics exports
them, run by ONNX Runtime or OpenVINO, with Ultralytics' own pre- and post-processing so that a model gives the
boxes it gives there.

- Input: each frame letterboxed to the graph's H x W as Ultralytics' `LetterBox` does for an exported model (scaled
  to fit, never past the graph's size in either side, bilinear, centred on grey 114), RGB / 255, NCHW float32.
- Output layouts: `[B, 4+C, N]` (cx, cy, w, h, then C class scores; the class of a box is its best score, par keeps
  COCO's person class (`--person-class`) above `--detector-threshold`, then NMS at `--detector-iou`) and end-to-end
  `[B, N, 6]` (x0, y0, x1, y1, score, class, zero-padded; no NMS). Anything else is one line naming its shape.
- Boxes go back to the frame as Ultralytics' `scale_boxes` takes them (padding off, divided by the gain, clipped).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..deploy.runtime import GraphInput, graph_sessions
from ..errors import ParError
from ..outputs import file_sha256
from .detect import Detections

GREY = 114  # Ultralytics' letterbox padding
MAX_DETECTIONS = 300  # Ultralytics' max_det
BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}


def letterbox(rgb: np.ndarray, height: int, width: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The frame scaled into height x width and padded as Ultralytics' LetterBox(auto=False, center=True):
    (image, gain, (left, top) padding)."""
    import cv2

    h, w = rgb.shape[:2]
    gain = min(height / h, width / w)
    new_w, new_h = int(round(w * gain)), int(round(h * gain))
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    image = rgb if (new_w, new_h) == (w, h) else cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(GREY, GREY, GREY))
    return image, gain, (left, top)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    import torch
    from torchvision.ops import nms

    return nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()


class YoloDetector:
    """A YOLO-family ONNX (or OpenVINO IR) detector; `detect_batch` runs frames through it."""

    def __init__(self, kind: str, path: str, threshold: float, iou: float, person_class: int, device: str,
                 min_height: int = 24):
        self.kind, self.path = kind, Path(path)
        if not self.path.is_file():
            raise ParError(f"{self.path}: detector file not found (--detector {kind}:FILE)")
        fix = ("give a YOLO detector exported by Ultralytics (`yolo export format=onnx`): input images [B, 3, H, W], "
               "output [B, 4+C, N] or [B, N, 6]")
        [self.graph], self.version = graph_sessions(BACKENDS[kind], [self.path],
                                                    [GraphInput(None, "float", (4,), "a YOLO detector", fix)], device)
        shape = self.graph.input_shape
        self.height, self.width = (shape[2] or 640, shape[3] or 640)
        self.batch = shape[0]  # None: any batch
        self.threshold, self.iou, self.person, self.min_height = threshold, iou, person_class, min_height
        probe = self.graph.run(np.zeros((1, 3, self.height, self.width), np.float32))
        self.layout = self._layout(probe.shape, fix)

    def _layout(self, shape: tuple[int, ...], fix: str) -> str:
        if len(shape) == 3 and shape[2] == 6 and shape[1] > 6:
            return "end-to-end"
        if len(shape) == 3 and 5 <= shape[1] < shape[2]:
            if self.person >= shape[1] - 4:
                raise ParError(f"{self.path}: has {shape[1] - 4} classes; --person-class {self.person} is not one "
                               f"of them")
            return "boxes-scores"
        raise ParError(f"{self.path}: gives an output of shape {list(shape)}, not a layout par reads ([B, 4+C, N] or "
                       f"[B, N, 6]); {fix}")

    def record(self) -> dict[str, Any]:
        return {"kind": f"{self.kind}:{self.path.name}", "file": str(self.path), "sha256": file_sha256(self.path),
                "runtime": {"name": BACKENDS[self.kind], "version": self.version}, "layout": self.layout,
                "input": [self.height, self.width], "threshold": self.threshold, "iou": self.iou,
                "person_class": self.person, "min_height": self.min_height}

    def detect_batch(self, frames: list[np.ndarray]) -> list[Detections]:
        boxed = [letterbox(f, self.height, self.width) for f in frames]
        x = np.stack([b[0] for b in boxed]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        if self.batch is None:
            out = self.graph.run(np.ascontiguousarray(x))
        else:  # a graph exported for one batch size (Ultralytics' default: 1)
            out = np.concatenate([self.graph.run(np.ascontiguousarray(x[k:k + self.batch]))
                                  for k in range(0, len(x), self.batch)])
        return [self._people(o, gain, f.shape[:2]) for o, (_, gain, _), f in zip(out, boxed, frames)]

    def _people(self, out: np.ndarray, gain: float, size: tuple[int, ...]) -> Detections:
        if self.layout == "end-to-end":
            keep = (out[:, 4] > self.threshold) & (out[:, 5].round() == self.person)
            boxes, scores = out[keep, :4].astype(np.float32), out[keep, 4].astype(np.float32)
        else:
            rows = out.T  # [N, 4+C]
            classes = rows[:, 4:]
            best = classes.argmax(1)
            scores = classes[np.arange(len(rows)), best]
            keep = (scores > self.threshold) & (best == self.person)
            cx, cy, w, h = rows[keep, :4].T
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
            scores = scores[keep].astype(np.float32)
            order = _nms(boxes, scores, self.iou)[:MAX_DETECTIONS]
            boxes, scores = boxes[order], scores[order]
        # the padding as Ultralytics' scale_boxes computes it (from the unrounded scaled size)
        pad = (round((self.width - size[1] * gain) / 2 - 0.1), round((self.height - size[0] * gain) / 2 - 0.1))
        boxes = boxes.copy()
        boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad[0]) / gain).clip(0, size[1])
        boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad[1]) / gain).clip(0, size[0])
        tall = (boxes[:, 3] - boxes[:, 1]) >= self.min_height
        return Detections(boxes[tall], scores[tall])

    def detect(self, index: int, rgb: np.ndarray) -> Detections:
        return self.detect_batch([rgb])[0]
