"""One CLIP + fusion model for every live camera: the T chosen crops of each closed (or provisional) track, gathered
into full batches, encoded as the checkpoint's store was (prepared the same way, tokens rounded to the store's dtype)
and answered with the track's probabilities by the run's runtime (PyTorch or an export), from a thread of its own."""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.preprocess import prepare_image
from ..deploy.runtime import AttributeRuntime
from .records import colour_histogram, track_cues, track_probabilities
from .tracking import Track


@dataclass
class Request:
    camera: Any  # the workflow's camera: deliver(request, probabilities, cues) takes the answer
    track: Track
    frames: list[int]
    crops: list[Image.Image]
    provisional: bool
    last_arrived: float  # monotonic time of the track's last frame
    closed_at: float


class AttributeBatcher:
    """One CLIP + fusion model for every camera: requests (T crops of a track) are gathered into batches of up to
    `batch_size` crops, so a GPU sees full batches however many cameras feed it."""

    def __init__(self, rt: AttributeRuntime, batch_size: int):
        self.rt, self.batch_size = rt, batch_size
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
        images = np.stack([prepare_image(c, self.rt.preprocess) for r in requests for c in r.crops])
        chunks = [torch.from_numpy(images[k:k + self.batch_size]) for k in range(0, len(images), self.batch_size)]
        feats = torch.cat([self.rt.tokens(c) for c in chunks])  # as stored
        self.batches += 1
        at = 0
        for r in requests:
            tokens = feats[at:at + len(r.crops)]
            at += len(r.crops)
            r.camera.deliver(r, track_probabilities(self.rt, tokens),
                             track_cues(tokens, [colour_histogram(c) for c in r.crops]))
