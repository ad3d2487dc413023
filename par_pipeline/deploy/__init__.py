"""Where the cameras are: a checkpoint exported as ONNX graphs (`par export`) and the runtimes that answer with them
(`--runtime torch|onnxruntime|openvino` of `par predict` and `par track`). This module stays free of torch: the
commands that take only checkpoints (par_pipeline.run) ask it whether a path is an export."""
from __future__ import annotations

import os
from pathlib import Path

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")  # auto: torch for a checkpoint, onnxruntime for an export
EXPORT_FORMAT, EXPORT_VERSION, EXPORT_FILE = "par-export", 1, "export.json"


def export_folder(path: str | os.PathLike) -> Path | None:
    """The export folder `path` names (the folder or its export.json), or None when it is not an export."""
    path = Path(path)
    if path.name == EXPORT_FILE and path.is_file():
        return path.parent
    return path if (path / EXPORT_FILE).is_file() else None
