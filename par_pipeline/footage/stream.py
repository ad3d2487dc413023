"""Live footage: a camera (an `rtsp://`, `rtmp://`, `http(s)://` (HLS, MPEG-TS), `udp://`, `tcp://` or `srt://`
stream, a capture device such as `/dev/video0`) or a file played as one (`--live`; a file still being written, a
recorder's MPEG-TS or MKV, is followed as it grows), read in one pass through PyAV.

A reader thread of its own decodes the source and hands frames to the caller through a short queue (a second of
video). When the caller is slower than the stream, the oldest waiting frame is dropped and counted (per minute of the
stream) rather than buffered without bound; frame numbers keep counting from the stream's own clock, so the caller
sees the gap and the tracker is told how much time passed. A stream that drops is opened again with backoff (up to
`reconnect` times in a row); the frames it missed are a `Gap`. A source that never connects, a wrong scheme, a
refused login and a stream without video end in one line each. Names and errors never carry the URL's credentials
(`errors.masked`).
"""
from __future__ import annotations

import collections
import io
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ParError, masked

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
QUEUE_SECONDS = 1.0  # video a reader holds for a slower caller before it drops the oldest frame
# formats a recorder writes as a stream (readable while they grow); an MP4/MOV is readable only once finished
GROWING_SUFFIXES = (".ts", ".mts", ".m2ts", ".mkv", ".webm", ".flv")
READ_TIMEOUT_S = 5.0  # the default of --stream-timeout: a camera that does not answer / stops sending for this long
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits before the 1st, 2nd, ... attempt to reconnect, then 8 s each
STREAM_OPTIONS = {"rtsp": {"rtsp_transport": "tcp"}, "rtsps": {"rtsp_transport": "tcp"}}  # no lost UDP packets
GROWING_QUIET_S = 2.0  # a --live file modified this recently is still being written; unchanged this long, it ended


def is_live(text: str) -> bool:
    """A stream URL or a capture device (what `par track` reads live whatever `--live` says)."""
    return "://" in text or text.startswith("/dev/")


MISSING_COLON = re.compile(r"^(rtsps?|rtmps?|https?|udp|tcp|srt)//", re.IGNORECASE)


def check_not_a_broken_url(text: str) -> None:
    """`rtsp//host/...` is a URL missing its colon, not a file path (which it would otherwise become)."""
    m = MISSING_COLON.match(text)
    if m:
        raise ParError(f"{masked(text)}: looks like a URL missing its colon; write {m.group(1)}://"
                       f"{masked(text[m.end():])}")


def check_live_source(text: str) -> None:
    """One line for a source that cannot be live footage, before anything connects."""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in STREAM_SCHEMES:
            raise ParError(f"{masked(text)}: {scheme}:// is not a stream par reads; give one of "
                           f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, a capture device (/dev/video0) or a file")
    elif text.startswith("/dev/"):
        path = Path(text)
        if not path.exists() or not stat.S_ISCHR(path.stat().st_mode):
            raise ParError(f"{text}: no such capture device; list them with `ls /dev/video*`")


@dataclass
class LiveFrame:
    index: int  # from 0, on the stream's clock: frames dropped (or missed while reconnecting) leave gaps
    time: float  # seconds since the stream started
    arrived: float  # time.monotonic() when the reader decoded it: the start of a record's delay
    rgb: np.ndarray


@dataclass
class Gap:
    """The stream was away (a reconnect): `frames` frames of time passed without video."""
    frames: int
    seconds: float
    reason: str


@dataclass
class _Failure:
    error: ParError


@dataclass
class StreamStats:
    frames_read: int = 0
    dropped: int = 0
    dropped_per_minute: dict[int, int] = field(default_factory=dict)  # minute of the stream -> frames dropped
    reconnects: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    ended: str = ""

    def record(self) -> dict[str, Any]:
        minutes = max(self.dropped_per_minute, default=-1) + 1
        return {"frames_read": self.frames_read, "dropped": self.dropped,
                "dropped_per_minute": [self.dropped_per_minute.get(m, 0) for m in range(minutes)],
                "reconnects": self.reconnects, "gaps": self.gaps, "ended": self.ended}


class GrowingFile(io.RawIOBase):
    """A file still being written (a recorder's MPEG-TS or MKV), read as it grows: at its end, a read waits for more
    until the file has not changed for GROWING_QUIET_S. Not seekable, so FFmpeg reads it as the stream it is (a
    seekable input would send it to the end to learn the duration, which is not there yet)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            n = self._file.readinto(buffer)
            if n or time.time() - os.stat(self.path).st_mtime > GROWING_QUIET_S:
                return n
            time.sleep(0.02)

    def close(self) -> None:
        self._file.close()
        super().close()


class LiveSource:
    """`source.start()`, then `for item in source:` LiveFrame or Gap, until the stream ends or `stop()`."""

    def __init__(self, spec: str, *, reconnect: int = 5, speed: float = 1.0, timeout: float = READ_TIMEOUT_S):
        check_live_source(spec)
        self.timeout = timeout
        self.spec, self.name = spec, masked(spec)
        self.is_file = not is_live(spec)
        if self.is_file and not Path(spec).is_file():
            raise ParError(f"{spec}: not found")
        self.reconnect, self.speed = reconnect, speed
        self.fps = 25.0
        self.stats = StreamStats()
        self._items: collections.deque[Any] = collections.deque()
        self._limit = 8
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: ParError | None = None
        self._thread = threading.Thread(target=self._read, name=f"reader {self.name}", daemon=True)
        self._started = time.monotonic()

    # --- the caller's side ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (with the reconnect attempts); raises the one-line error of a source that never gives video."""
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            self._thread.join(timeout=1)
            raise self._failure

    def __iter__(self) -> Iterator[LiveFrame | Gap]:
        while True:
            with self._cond:
                while not self._items:
                    if not self._thread.is_alive():
                        return
                    self._cond.wait(0.1)
                item = self._items.popleft()
            if item is None:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def stop(self, why: str = "stopped") -> None:
        if not self.stats.ended:
            self.stats.ended = why
        self._stop.set()

    def join(self) -> None:
        self._thread.join(timeout=self.timeout + 2)

    # --- the reader thread ----------------------------------------------------------------------------------------

    def _put(self, item: Any, droppable: bool) -> None:
        with self._cond:
            if droppable:
                while len(self._items) >= self._limit and isinstance(self._items[0], LiveFrame):
                    self._items.popleft()  # the oldest waiting frame: a live caller wants the newest
                    self.stats.dropped += 1
                    minute = int((time.monotonic() - self._started) // 60)
                    self.stats.dropped_per_minute[minute] = self.stats.dropped_per_minute.get(minute, 0) + 1
            self._items.append(item)
            self._cond.notify()

    def _fail(self, error: ParError) -> None:
        self._failure = error
        self._put(_Failure(error), droppable=False)
        self._ready.set()

    def _open(self) -> Any:
        import av

        if self.is_file:
            path = Path(self.spec)
            if path.suffix.lower() in GROWING_SUFFIXES and time.time() - path.stat().st_mtime < GROWING_QUIET_S:
                return av.open(GrowingFile(path))  # a recorder's stream format still being written: follow it
            return av.open(self.spec)
        if self.spec.startswith("/dev/"):
            return av.open(self.spec, format="v4l2", timeout=(self.timeout, self.timeout))
        scheme = self.spec.split("://", 1)[0].lower()
        return av.open(self.spec, options=STREAM_OPTIONS.get(scheme, {}), timeout=(self.timeout, self.timeout))

    def _read(self) -> None:
        import av

        failures, last_index, last_arrived, away = 0, -1, None, ""
        while not self._stop.is_set():
            try:
                container = self._open()
            except (av.error.FFmpegError, OSError) as exc:
                refused = _login_refused(exc)
                if refused or failures >= self.reconnect or self.is_file:
                    if last_index < 0 or refused:
                        self._fail(ParError(_open_error(self.name, exc, failures + 1, self.timeout)))
                    else:
                        self.stats.ended = f"could not reconnect ({_why(exc, self.timeout)})"
                    break
                away = away or f"could not connect ({_why(exc, self.timeout)})"
                self._wait(failures)
                failures += 1
                continue
            with container:
                if not container.streams.video:
                    self._fail(ParError(f"{self.name}: the stream has no video (only "
                                        f"{', '.join(s.type for s in container.streams) or 'nothing'}); give a "
                                        f"camera's video stream"))
                    break
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 25.0
                self._limit = max(4, int(round(self.fps * QUEUE_SECONDS)))
                first_time, base, start = None, last_index + 1, time.monotonic()
                try:
                    for n, frame in enumerate(container.decode(stream)):
                        if self._stop.is_set():
                            break
                        t = frame.time if frame.time is not None else n / self.fps
                        if first_time is None:
                            first_time = t
                            if last_arrived is not None:  # back after a reconnect: the time away is a gap
                                missed = max(0, int(round((time.monotonic() - last_arrived) * self.fps)) - 1)
                                base = last_index + 1 + missed
                                self.stats.reconnects += 1
                                gap = Gap(missed, round(missed / self.fps, 3), away or "the stream dropped")
                                self.stats.gaps.append({"after_frame": last_index + 1, **gap.__dict__})
                                self._put(gap, droppable=False)
                        if self.is_file:  # a file plays at its own rate (times --speed), as a camera would
                            time.sleep(max(0.0, start + (t - first_time) / self.speed - time.monotonic()))
                        index = max(last_index + 1, base + int(round((t - first_time) * self.fps)))
                        rgb = frame.to_ndarray(format="rgb24")
                        last_index, last_arrived = index, time.monotonic()
                        self.stats.frames_read += 1
                        failures, away = 0, ""
                        self._ready.set()
                        self._put(LiveFrame(index, round(index / self.fps, 4), last_arrived, rgb), droppable=True)
                    away = "the stream ended"
                except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
                    away = f"the stream dropped ({_why(exc, self.timeout)})"
            if self._stop.is_set():
                break
            if self.is_file:
                self.stats.ended = "the file ended"
                break
            if last_index < 0 and failures >= self.reconnect:
                self._fail(ParError(f"{self.name}: connected but no frame came ({away}); check the stream"))
                break
            if failures >= self.reconnect:
                self.stats.ended = away
                break
            self._wait(failures)
            failures += 1
        if not self.stats.ended:
            self.stats.ended = "stopped"
        self._ready.set()
        self._put(None, droppable=False)

    def _wait(self, failures: int) -> None:
        self._stop.wait(BACKOFF_S[min(failures, len(BACKOFF_S) - 1)])


def _why(exc: BaseException, timeout: float = READ_TIMEOUT_S) -> str:
    import av

    if isinstance(exc, av.error.ExitError):  # FFmpeg's "immediate exit requested": our timeout fired
        return f"nothing received for {timeout:g} s"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return masked(text.split(": '")[0])[:160]


def _login_refused(exc: BaseException) -> bool:
    """The server said 401 or 403 (RTSP and HTTP alike): by FFmpeg's error, never by the text, which holds the URL."""
    import av

    return isinstance(exc, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError))


def _open_error(name: str, exc: BaseException, attempts: int, timeout: float = READ_TIMEOUT_S) -> str:
    if _login_refused(exc):
        return (f"{name}: the camera refused the login ({_why(exc, timeout)}); check the user and password in the "
                f"URL")
    if Path(name).is_file():
        return f"{name}: unreadable video ({_why(exc, timeout)}); give an mp4/avi/mkv file"
    import av

    if isinstance(exc, av.error.InvalidDataError):  # something answered, but not with a stream FFmpeg can read
        return (f"{name}: no video stream could be read there ({_why(exc, timeout)}) after {attempts} attempt(s); "
                f"check the host, port and path, and that the server sends video")
    return (f"{name}: could not connect ({_why(exc, timeout)}) after {attempts} attempt(s); check the address, that "
            f"the camera is on, and --reconnect")
