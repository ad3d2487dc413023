"""Ultralytics' side of the YOLO detector tests, run as its own process (Ultralytics is AGPL: a test dependency
only, never imported by par): two random-weight detectors built offline from Ultralytics' YAML files (YOLOv8n: the
[1, 4+C, N] layout; YOLOv10n end-to-end: [1, N, 6]), their box and class
biases spread so that 'person' wins, exported by
Ultralytics' own exporter, and Ultralytics' predictor's person boxes on the frames given.

usage: python yolo_reference.py OUT FRAMES.npy CONF IOU"""
import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ultralytics import YOLO  # noqa: E402

out, frames, conf, iou = Path(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
torch.manual_seed(0)
boxes = {}
for yaml, extra, name in (("yolov8n.yaml", {}, "v8"), ("yolov10n.yaml", {"end2end": True}, "v10")):
    model = YOLO(yaml)
    with torch.no_grad():  # random weights score every class about 0 and shape every box alike: favour a person
        for key, p in model.model.model[-1].named_parameters():
            if key.endswith(".2.bias") and ("cv2" in key or "cv3" in key):
                p.normal_(0.0, 3.0 if "cv2" in key else 1.0)
                if "cv3" in key:
                    p[0] += 4.0
    exported = model.export(format="onnx", simplify=False, imgsz=(192, 320), verbose=False, **extra)
    os.replace(exported, out / f"{name}.onnx")
    predictor = YOLO(str(out / f"{name}.onnx"), task="detect")
    for k, frame in enumerate(frames):
        r = predictor.predict(np.ascontiguousarray(frame[..., ::-1]), conf=conf, iou=iou, classes=[0],
                              imgsz=(192, 320), verbose=False)[0]
        boxes[f"{name}_{k}_boxes"] = r.boxes.xyxy.numpy()
        boxes[f"{name}_{k}_scores"] = r.boxes.conf.numpy()
np.savez(out / "ultralytics.npz", **boxes)
