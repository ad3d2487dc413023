"""Camera footage as a stream of frames: a video file (mp4/avi/mkv/mov/webm, through PyAV) or a folder of numbered
frames (MOTChallenge `img1/000001.jpg`, ...). Frames are decoded one at a time, so memory does not grow with the
length. A file that is damaged part way (truncated, corrupt packets) yields the frames before the damage and says
where and why it stopped (`FrameSource.stopped`), so the caller can answer what was readable and say so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ParError

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Stopped:
    """Where a damaged source stopped: the number of frames read before it, and why."""
    frames_read: int
    reason: str


class FrameSource:
    """`for index, rgb in source:` index from 0, rgb uint8 [H, W, 3]. Iterate again to decode again from the start."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            self.files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                                key=_frame_number)
            if not self.files:
                raise ParError(f"{self.path}: no frames (jpg/png) in the folder; give a video or a folder of "
                               f"numbered frames")
        elif self.path.is_file() and self.path.suffix.lower() in VIDEO_SUFFIXES:
            self.files = None
        elif self.path.exists():
            raise ParError(f"{self.path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a frame folder")
        else:
            raise ParError(f"{self.path}: not found")
        self.stopped: Stopped | None = None
        self.fps = self._probe()

    def _probe(self) -> float:
        """Frames per second (a frame folder: 10, unless a MOTChallenge seqinfo.ini beside it says otherwise)."""
        if self.files is not None:
            info = self.path.parent / "seqinfo.ini"
            m = re.search(r"frameRate\s*=\s*([\d.]+)", info.read_text()) if info.is_file() else None
            return float(m.group(1)) if m else 10.0
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                return float(rate) if rate else 25.0
        except (av.error.FFmpegError, OSError, IndexError) as exc:
            raise ParError(f"{self.path}: unreadable video ({type(exc).__name__}: {_first_line(exc)}); give an "
                           f"mp4/avi/mkv file") from None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        self.stopped = None
        yield from (self._images() if self.files is not None else self._video())

    def _images(self) -> Iterator[tuple[int, np.ndarray]]:
        for i, path in enumerate(self.files):
            try:
                with Image.open(path) as img:
                    img.load()
                    rgb = np.asarray(img.convert("RGB"))
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
                self.stopped = Stopped(i, f"{path.name}: unreadable frame ({_first_line(exc)})")
                return
            yield i, rgb

    def _video(self) -> Iterator[tuple[int, np.ndarray]]:
        import av

        index, announced = 0, 0
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                announced = stream.frames or (int(round(container.duration / 1e6 * self.fps)) if container.duration
                                              else 0)
                for frame in container.decode(stream):
                    yield index, frame.to_ndarray(format="rgb24")
                    index += 1
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
            self.stopped = Stopped(index, f"decoding failed after frame {index} ({type(exc).__name__}: "
                                          f"{_first_line(exc)})")
            return
        if announced and index < announced - 1:  # a cut-off file decodes silently up to the cut
            self.stopped = Stopped(index, f"the video ends after frame {index} of the {announced} its header "
                                          f"announces (truncated or damaged)")


def _frame_number(path: Path) -> tuple[int, str]:
    digits = re.findall(r"\d+", path.stem)
    return (int(digits[-1]) if digits else -1, path.name)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
