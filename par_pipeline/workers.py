"""Worker processes (DataLoader decode and token workers) end with the `par` process that started them.

A `par` process killed with SIGKILL runs no clean-up: its forked loader workers would live on until they next notice
their parent is gone (torch checks every few seconds), keeping their copies of everything the parent had open. Each
worker asks the kernel for SIGKILL when its parent dies (Linux `PR_SET_PDEATHSIG`; elsewhere workers end as torch's
watchdog ends them). Folder locks are never held by workers at all (`outputs.exclusive`).
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from typing import Callable

PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int, _worker_id: int | None = None) -> None:
    if os.getppid() != parent:
        return  # started by a fork server or spawned: not a fork of the parent, holding nothing of its
    if sys.platform.startswith("linux"):
        # the process's own symbols (libc among them): find_library would run ldconfig in every worker start
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between the check and the request
            os._exit(1)


def stop_with_parent() -> Callable[[int], None]:
    """A DataLoader `worker_init_fn`: a worker forked from this (the calling) process is killed as soon as this
    process dies (workers of a fork server or spawned ones have another parent and are left to torch's watchdog)."""
    return functools.partial(_stop_with_parent, os.getpid())
