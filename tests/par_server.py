"""`par` for the README's shell blocks without an interpreter start and a torch import per command (about 4 s each,
some 40 commands): a server that imported par once forks a process per command, and the `par` the blocks find first
on their PATH is a small client that hands the server its arguments, working folder, environment and its stdin,
stdout and stderr, passes on the signals it gets, and ends as the command ended (its exit code, or its signal).

Each command is still a process of its own, running the CLI's own entry (`cli.main.run`, what the installed `par`
calls) with the shell's arguments, folder and environment, writing to the shell's files. The installed entry point
itself is run as written elsewhere (the Makefile's targets, torchrun's `-m cli.main`, test_packaging's wheel). This
file is stdlib-only at its top: the client imports it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
# What a forked command finds imported (each import once in the server, not once per command). The server forks
# before any torch work runs, so each child starts clean (OpenMP's thread pool is not fork-safe once used).
PRELOAD = ("cli.main", "par_pipeline.workflows.extract", "par_pipeline.workflows.train",
           "par_pipeline.workflows.evaluate", "par_pipeline.workflows.track", "par_pipeline.workflows.link",
           "par_pipeline.workflows.live", "par_pipeline.workflows.search")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = sock.recv(n - len(data))
        if not part:
            raise ConnectionError("par server closed the connection")
        data += part
    return data


def client(server: str, argv: list[str]) -> None:
    """The `par` of a README block: the command run by the server, ended as it ended."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(server)
    ignored = [int(sig) for sig in FORWARDED if signal.getsignal(sig) == signal.SIG_IGN]  # as a shell's `&` does
    body = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "ignored": ignored}).encode()
    socket.send_fds(sock, [struct.pack("!I", len(body))], [0, 1, 2])
    sock.sendall(body)
    (pid,) = struct.unpack("!i", _recv_exact(sock, 4))
    for sig in FORWARDED:
        if sig not in ignored:
            signal.signal(sig, lambda s, _frame: os.kill(pid, s))
    (code,) = struct.unpack("!i", _recv_exact(sock, 4))
    if code < 0:  # ended by a signal: end by it too
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _run_child(conn: socket.socket, fds: list[int], request: dict) -> None:
    """In the forked process: the shell's files, folder and environment, then the CLI; ends the process (its
    exit runs the interpreter's shutdown, as a `par` of its own would: trackers flush there)."""
    import multiprocessing

    from cli.main import run

    os.setpgrp()  # its own process group, as a shell job: its loader workers are found by it after a kill
    for sig in FORWARDED:  # the client's dispositions; Ctrl-C as in a `par` started from a shell
        signal.signal(sig, signal.SIG_IGN if sig in request["ignored"] else
                      signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    multiprocessing.set_start_method(None, force=True)  # a fresh process's default, not the server's
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    conn.close()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["par", *request["argv"]]
    code = run(request["argv"])
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


def serve(path: str) -> None:
    """Accept commands on the unix socket `path` until killed or orphaned (the test process that started it gone,
    even by SIGKILL); fork one process each, tell each client its process's pid and then how it ended."""
    import importlib
    import selectors

    for name in PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # the path appears when the server is ready
    waiting: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    parent = os.getppid()
    while os.getppid() == parent:
        if sel.select(timeout=0.02):
            conn, _ = listener.accept()
            head, fds, _, _ = socket.recv_fds(conn, 4, 3)
            request = json.loads(_recv_exact(conn, struct.unpack("!I", head)[0]))
            pid = os.fork()
            if pid == 0:
                sel.close()
                listener.close()
                for other in waiting.values():
                    other.close()
                _run_child(conn, fds, request)  # never returns
            for fd in fds:
                os.close(fd)
            conn.sendall(struct.pack("!i", pid))
            waiting[pid] = conn
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
                except OSError:  # the client is gone (killed): nobody to tell
                    pass
                conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        client(sys.argv[1], sys.argv[2:])
