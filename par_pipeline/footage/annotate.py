"""`par track --annotate`: the footage again with each person's box, id and a short label, encoded so that a browser
plays it (H.264 in MP4/MOV/MKV, VP9 in WebM; AVI keeps MPEG-4 Part 2, which no browser plays).

A label is the id and the colours first (`#3 red/black`), then the yes/no attributes present, cut to LABEL_CHARS; it is
drawn inside the frame, above its box where there is room (else inside it), and moved down past the labels already
drawn in that frame, so labels never cover each other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw

from ..data.schema import AttributeSchema
from ..errors import ParError
from ..outputs import check_file_target

LABEL_CHARS = 28
ANNOTATED = "par track --annotate"  # the container's comment: how a later run knows the file is its own
# suffix -> (container, encoders in order of preference: the first this PyAV build has is used)
FORMATS = {".mp4": ("mp4", ("libx264", "h264", "libopenh264", "mpeg4")),
           ".mov": ("mov", ("libx264", "h264", "libopenh264", "mpeg4")),
           ".mkv": ("matroska", ("libx264", "h264", "libopenh264", "mpeg4")),
           ".webm": ("webm", ("libvpx-vp9", "libvpx")),
           ".avi": ("avi", ("mpeg4",))}
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]


def check_annotate_target(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise ParError(f"--annotate {path}: give a file name ending in {', '.join(FORMATS)}")
    check_file_target(path, "annotated video", is_annotated)


def is_annotated(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment") == ANNOTATED
    except (av.error.FFmpegError, OSError):
        return False


def encoder_for(path: Path) -> str:
    """The first encoder of the file type's preference list that this PyAV build has."""
    import av

    for name in FORMATS[path.suffix.lower()][1]:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.error.FFmpegError, ValueError):  # UnknownCodecError is both, depending on the release
            continue
    raise ParError(f"--annotate {path}: this PyAV build has none of {', '.join(FORMATS[path.suffix.lower()][1])}; "
                   f"choose another file type ({', '.join(FORMATS)})")


def label(record: dict[str, Any], schema: AttributeSchema) -> str:
    """`#3 red/black backpack, hat`: the id, the top and bottom colours, then the yes/no attributes present."""
    d = record["description"]
    colours = "/".join(d[g] for g in ("top color", "bottom color") if g in d)
    present = [g.name for g in schema.groups if g.is_binary and d[g.name] == g.value_names[1]]
    text = " ".join(p for p in (f"#{record['id']}", colours, ", ".join(present)) if p)
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


def draw_people(img: Image.Image, people: Iterable[tuple[int, tuple[float, ...]]], labels: dict[int, str]
                ) -> list[tuple[float, float, float, float]]:
    """Boxes and labels of one frame: labels inside the frame and apart from each other; returns where the labels
    went (x0, y0, x1, y1)."""
    d = ImageDraw.Draw(img)
    W, H = img.size
    placed: list[tuple[float, float, float, float]] = []
    for tid, b in sorted(people, key=lambda p: (p[1][1], p[1][0])):
        colour = PALETTE[tid % len(PALETTE)]
        d.rectangle([b[0], b[1], b[2], b[3]], outline=colour, width=2)
        x0, y0, x1, y1 = d.textbbox((0, 0), labels[tid])
        w, h = x1 - x0 + 2, y1 - y0 + 2
        x = min(max(0.0, b[0]), max(0.0, W - w))
        y = b[1] - h if b[1] - h >= 0 else max(0.0, b[1])
        for _ in range(len(placed) + 1):  # down past the labels it would cover
            hit = next((r for r in placed if x < r[2] and r[0] < x + w and y < r[3] and r[1] < y + h), None)
            if hit is None:
                break
            y = hit[3]
        y = min(y, max(0.0, H - h))
        placed.append((x, y, x + w, y + h))
        d.rectangle([x, y, x + w, y + h], fill=(0, 0, 0))
        d.text((x + 1 - x0, y + 1 - y0), labels[tid], fill=colour)
    return placed


def write_annotated(tmp: Path, suffix: str, frames: Iterable[tuple[int, np.ndarray]], fps: float,
                    boxes: dict[int, list[tuple[int, tuple[float, ...]]]], labels: dict[int, str],
                    codec: str, after_frame: Callable[[int], bool]) -> None:
    """Encode the frames with their people drawn; `after_frame(index)` says whether to stop after that frame."""
    import av

    container_format = FORMATS[suffix][0]
    with av.open(str(tmp), "w", format=container_format,
                 options={"movflags": "+faststart"} if container_format in ("mp4", "mov") else {}) as container:
        container.metadata["comment"] = ANNOTATED
        stream = None
        for index, rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=max(1, int(round(fps))))
                stream.width, stream.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                stream.pix_fmt = "yuv420p"
                if codec == "libx264":
                    stream.options = {"preset": "veryfast", "crf": "23"}
                else:
                    stream.bit_rate = 4_000_000
            img = Image.fromarray(rgb[:stream.height, :stream.width])
            draw_people(img, boxes.get(index, []), labels)
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                container.mux(packet)
            if after_frame(index):
                break
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
