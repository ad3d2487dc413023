"""Every output `par` writes goes through here: nothing half-written, nothing of the user's replaced.

- A file output is written beside its target and renamed onto it when complete; an existing target is
  replaced only when it is an earlier `par` output of the same kind (the caller says how to recognise
  one), never a folder and never a file `par` did not write.
- A folder output carries a marker file (`.par-output.json`: kind and the files `par` wrote); an
  existing folder is reused or replaced only when it is empty or carries the marker of the same kind.
- Folders that a long job writes into (a store being built, a run being trained) are locked while the
  job runs, so a second job on the same output is refused at once instead of corrupting the first.
- `fault_point` marks the places where a crash must leave a resumable state; tests kill the process
  there (the `PAR_TEST_KILL_AT` hook) to prove it.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from . import __version__
from .errors import ParError

MARKER = ".par-output.json"
MARKER_FORMAT = "par-output"

_fault_hits = 0


def fault_point(name: str) -> None:
    """A point where the process may die: with PAR_TEST_KILL_AT=N the N-th point reached kills the process with
    SIGKILL (no clean-up runs, as with a power cut or `kill -9`); PAR_TEST_FAULT_LOG=FILE appends each name."""
    global _fault_hits
    log = os.environ.get("PAR_TEST_FAULT_LOG")
    kill_at = os.environ.get("PAR_TEST_KILL_AT")
    if not (log or kill_at):
        return
    _fault_hits += 1
    if log:
        with open(log, "a") as f:
            f.write(f"{name}\n")
    if kill_at and _fault_hits == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def io_errors(path: str | os.PathLike, doing: str = "write") -> Iterator[None]:
    """Turn an OSError (disk full, read-only folder, a file where a folder should be) into one line naming the path."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ParError(f"{path}: cannot {doing} ({reason}); check that the folder exists, is writable and has free "
                       f"space, then run the same command again") from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (remembered per path, size and modification time: weight files are hashed more than once)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_TAGS = ("tmp", "old")
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: mkstemp/mkdtemp make private files, outputs get the permissions the user's umask gives


def temp_sibling(final: Path, tag: str = "tmp", folder: bool = False) -> Path:
    """Where this process builds `final` (tmp: made here, a file or a folder, by tempfile) or parks the output it
    replaces (old: a free name). Hidden, named with this host and pid (so that a later run on this host can tell a
    dead process's leftovers) and a random part (two hosts writing to one volume never collide)."""
    prefix = f".{final.name}.{tag}-{_HOST}-{os.getpid()}-"
    if tag == "old":
        return final.with_name(prefix + secrets.token_hex(4))
    if folder:
        made = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        os.chmod(made, 0o777 & ~_UMASK)
        return made
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_UMASK)
    return Path(name)


def _temp_maker(name: str, final_name: str, tag: str) -> tuple[str, int] | None:
    """(host, pid) of the par process that made a temp sibling of `final_name` called `name`, or None when `name` is
    not one. Names of earlier par versions (`.<name>.<tag>-<pid>`) were made on this host."""
    prefix = f".{final_name}.{tag}-"
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split("-")  # host, pid, random part (none of them holds a '-')
    if len(parts) == 1 and parts[0].isdigit():
        return _HOST, int(parts[0])
    return (parts[0], int(parts[1])) if len(parts) == 3 and parts[1].isdigit() else None


def _owner_of(name: str, final: Path, tag: str) -> int | None:
    """The pid of this host's par process that made a temp sibling called `name`, or None (another host's, or not a
    name par gives)."""
    maker = _temp_maker(name, final.name, tag)
    return maker[1] if maker is not None and maker[0] == _HOST else None


def remove_stale_siblings(final: Path) -> None:
    """Remove what a killed par process on this host left beside `final` (its temp_sibling names, whose pid is no
    longer running: kill -9 or a power cut gives no chance to clean up), so that repeated crashes do not pile up
    copies of a large output. A running process's, another host's, or anything else, is left alone."""
    for tag in TEMP_TAGS:
        for path in final.parent.glob(f".{glob.escape(final.name)}.{tag}-*"):
            pid = _owner_of(path.name, final, tag)
            if pid is not None and pid != os.getpid() and not _running(pid):
                remove_own(path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_own(path: Path) -> None:
    """Remove a temporary file or folder par made (this process, or a dead one: never called on a user's path)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def atomic_write(final: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """`write(tmp)` then fsync and rename onto `final`; nothing appears at `final` unless `write` completed."""
    final = Path(final)
    with io_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(final)
        tmp = temp_sibling(final)
        try:
            write(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            fault_point(f"before-rename:{final.name}")
            os.replace(tmp, final)
            fsync_dir(final.parent)
        finally:
            remove_own(tmp)


def check_file_target(path: str | os.PathLike, kind: str, recognise: Callable[[Path], bool]) -> None:
    """Refuse a target that is a folder or a file that is not an earlier `par` output of this kind."""
    path = Path(path)
    if path.is_dir():
        raise ParError(
            f"{path}: is a folder; give a file name for the {kind} (par never replaces a folder with a file)"
        )
    if path.exists() and not recognise(path):
        raise ParError(f"{path}: exists and is not a par {kind}; par does not overwrite files it did not write - "
                       f"remove it yourself or choose another name")


def write_output_file(path: str | os.PathLike, kind: str, recognise: Callable[[Path], bool],
                      write: Callable[[Path], None]) -> None:
    check_file_target(path, kind, recognise)
    atomic_write(path, write)


def json_format_is(fmt: str) -> Callable[[Path], bool]:
    """A recogniser for JSON outputs whose top-level object names its `format`."""
    def recognise(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("format") == fmt
        except (OSError, ValueError, AttributeError):
            return False
    return recognise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """A JSON file inside a folder `par` owns (atomic; the folder's ownership was checked by its claim)."""
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# --- folders ------------------------------------------------------------------------------------------------------

def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == MARKER_FORMAT else None


def _write_marker(folder: Path, kind: str, files: list[str]) -> None:
    (folder / MARKER).write_text(json.dumps({"format": MARKER_FORMAT, "kind": kind, "files": sorted(files),
                                             "par_version": __version__}, indent=2) + "\n")


def mark_own(folder: Path, kind: str, files: list[str]) -> None:
    """Record in a folder's marker the files par writes there (a live output names them before it writes them)."""
    _write_marker(folder, kind, files)


def claim_dir(path: str | os.PathLike, kind: str) -> Path:
    """A folder this output may write into: created (with its marker) when missing; an empty folder is adopted;
    a folder with the marker of another kind, or without a marker and not empty, is refused."""
    path = Path(path)
    with io_errors(path, "create"):
        if path.exists() and not path.is_dir():
            raise ParError(f"{path}: exists and is a file; the {kind} needs a folder - choose another --out")
        if path.is_dir():
            marker = read_marker(path)
            if marker is not None:
                if marker.get("kind") != kind:
                    raise ParError(
                        f"{path}: holds a par {marker.get('kind')} output, not a {kind}; choose another --out"
                    )
                return path
            if any(path.iterdir()):
                raise ParError(f"{path}: exists, is not empty and was not written by par; par does not write into "
                               f"folders it did not create - choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        _write_marker(path, kind, [])
    return path


def check_dir_target(final: str | os.PathLike, kind: str) -> None:
    """A folder output may replace only an earlier par output of this kind holding nothing but what par wrote:
    checked before long work starts, and again when the folder is put in place."""
    final = Path(final)
    if final.exists():
        marker = read_marker(final) if final.is_dir() else None
        if marker is None or marker.get("kind") != kind:
            raise ParError(f"{final}: exists and is not a par {kind} output; par does not replace what it did not "
                           f"write - remove it yourself or choose another --out")
        files = set(marker.get("files", []))
        extra = sorted(n for n in set(os.listdir(final)) - files - {MARKER}  # par's own temp files are not extra
                       if not any(_temp_maker(n, f, tag) for f in files for tag in TEMP_TAGS))
        if extra:
            raise ParError(f"{final}: holds files par did not write ({', '.join(extra[:3])}); move them away or "
                           f"choose another --out")


def replace_dir(final: str | os.PathLike, kind: str, build: Callable[[Path], None]) -> None:
    """Build a whole folder beside `final`, then put it in place. An existing `final` is replaced only when it is a
    par output of this kind holding nothing but the files par wrote there."""
    final = Path(final)
    check_dir_target(final, kind)
    old = temp_sibling(final, "old")
    with io_errors(final):
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(final)
        tmp = temp_sibling(final, folder=True)
        try:
            build(tmp)
            _write_marker(tmp, kind, [p.name for p in tmp.iterdir()])
            fault_point(f"before-rename:{final.name}")
            if final.exists():
                os.rename(final, old)
            os.rename(tmp, final)
        finally:
            remove_own(tmp)
            remove_own(old)


# --- locks --------------------------------------------------------------------------------------------------------

# The descriptors of the folder locks this process holds. flock belongs to the open file, which a fork shares: a
# forked child (a DataLoader worker) would keep the lock after this process is killed, and refuse the very rerun that
# should resume. Each child closes its copies at once, so the lock ends exactly with the process that took it.
_held_locks: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in list(_held_locks):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the folder itself) while a job writes into it; only this process
    holds it (forked children close their copies), so it ends with this process however it ends."""
    folder = Path(folder)
    with io_errors(folder, "lock"):
        fd = os.open(folder, os.O_RDONLY)
    _held_locks.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ParError(f"{folder}: another par {what} is writing here right now; wait for it to finish "
                           f"(or stop it), then run this command again") from None
        yield
    finally:
        _held_locks.discard(fd)
        os.close(fd)
