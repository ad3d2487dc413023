"""Shared fixtures: a small MARS-shaped synthetic dataset, its manifest, token stores (zarr, HDF5, int8, several views,
Duke) and a trained run, each built once per session; and the two ways to run `par`: in-process (`run_par`, the
default: the CLI's own error mapping, no interpreter start-up) and as a real process of its own (`run_par_forked`,
where the process is the point: SIGKILL, resource limits), forked from a server that imported par once. The entry
point itself (`python -m cli.main`, `par`, torchrun) runs as written in the README and Makefile tests."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# rich sizes its consoles from COLUMNS when they are made (cli.ui, at import): wide, so that tables do not wrap
os.environ.setdefault("COLUMNS", "200")
# `make test` runs as many test processes as there are cores: one compute thread each (and in every process they
# start), set before torch is imported. More would oversubscribe the cores, and idle OpenMP threads spin.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# torch.compile's vector ISA is the one /proc/cpuinfo names, without inductor's probe that compiles and loads a test
# library per ISA first (8 s of a compiled test's 24 on a fresh cache, and CI's cache is always fresh)
os.environ.setdefault("TORCHINDUCTOR_VEC_ISA_OK", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PAR = [sys.executable, "-m", "cli.main"]
# The tiny CLIP runs in fp32 on the CPU (CPU fp16 is an emulation: slow, and not what a GPU computes). One shard
# writer: the fault points then come in one order, which the kill tests index (several: test_kill, test_extract).
TINY_EXTRACT = {"clip_model": "par-tiny-clip", "allow_random_init": True, "precision": "fp32", "batch_size": 8,
                "shard_frames": 16, "workers": 0, "writers": 1}
SMALL_TRAIN = {"model": "vtf-par-small", "epochs": 2, "batch_size": 4, "workers": 0, "warmup_epochs": 1, "frames": 3,
               "fusion_init": "random"}


def flags(options: dict) -> list[str]:
    """Config values as the command-line flags that give them."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        else:
            out += [flag, str(value)]
    return out


TINY = flags(TINY_EXTRACT)
TRAIN = flags(SMALL_TRAIN)


# W&B names the service process of a process that logged to it in that process's environment (WANDB_SERVICE), for
# its children to join: a `par` the tests start is a user's command, with a W&B service of its own.
OWN_PROCESS_ONLY = ("WANDB_SERVICE",)


def par_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OWN_PROCESS_ONLY}
    return {**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(extra or {})}


@dataclass
class Result:
    """What a `par` run gave: as subprocess.CompletedProcess names it (and, for a forked one, its pid)."""
    returncode: int
    stdout: str
    stderr: str
    pid: int = 0


@contextlib.contextmanager
def environment(extra: dict | None) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in (extra or {})}
    os.environ.update({k: str(v) for k, v in (extra or {}).items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_par(*args, check: bool = True, env: dict | None = None) -> Result:
    """`par ARGS` in this process through the CLI's own entry (`cli.main.run`): the same parsing, rendering and
    error-to-exit-code mapping as the installed command."""
    from cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), environment(env):
        code = run([str(a) for a in args])
    result = Result(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"par {' '.join(map(str, args))} failed ({code}):\n{result.stdout}\n{result.stderr}")
    return result


# Modules the fork server imports once, so that each forked `par` starts with them loaded.
FORK_PRELOAD = ["cli.main", "par_pipeline.workflows.extract", "par_pipeline.workflows.train",
                "par_pipeline.workflows.evaluate", "par_pipeline.workflows.track"]


def _forked_par(args: list[str], env: dict[str, str], folder: str, file_size_limit: int | None) -> None:
    """The body of a forked `par` process: its environment, its limits, its output in files, then the CLI."""
    import multiprocessing
    import resource
    import signal

    from cli.main import run

    os.setpgrp()  # its own process group, as a shell job: its loader workers are found by it after a kill
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a `par` started from a shell
    multiprocessing.set_start_method(None, force=True)  # a fresh process's default, not the fork server's
    for name in OWN_PROCESS_ONLY:
        os.environ.pop(name, None)
    os.environ.update(env)
    if file_size_limit is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    out, err = open(Path(folder) / "stdout", "w"), open(Path(folder) / "stderr", "w")
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = out, err
    code = run(args)
    out.flush()
    err.flush()
    sys.exit(code)


class ForkedPar:
    """`par ARGS` as a real process of its own (its own pid, its own signals, limits of its own), forked from
    multiprocessing's fork server, which imported par once: no interpreter start-up and no torch import per process.
    The server forks before any torch work runs, so each child starts clean (OpenMP's thread pool is not fork-safe
    once used). Used as subprocess.Popen is: `pid`, `poll()`, `returncode` (negative for a signal), `wait()`,
    `communicate()` (its stdout and stderr, once it ended)."""

    def __init__(self, args: list[str], env: dict | None = None, file_size_limit: int | None = None):
        import multiprocessing
        import tempfile

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(FORK_PRELOAD)
        self._folder = tempfile.TemporaryDirectory()
        self._proc = ctx.Process(target=_forked_par, args=([str(a) for a in args], {k: str(v) for k, v in
                                                                                    (env or {}).items()},
                                                            self._folder.name, file_size_limit))
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode

    def poll(self) -> int | None:
        return self._proc.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise subprocess.TimeoutExpired(f"par (pid {self.pid})", timeout)
        return self._proc.exitcode

    def kill(self) -> None:
        self._proc.kill()
        self._proc.join()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = (Path(self._folder.name) / name for name in ("stdout", "stderr"))
        texts = tuple(p.read_text() if p.exists() else "" for p in (out, err))
        self._folder.cleanup()
        return texts


def run_par_forked(*args, env: dict | None = None, file_size_limit: int | None = None,
                   while_running: Callable[[Any], None] | None = None) -> Result:
    """`par ARGS` as a process of its own (ForkedPar), run to its end; `while_running(process)` is called once it
    started (e.g. a kill from outside at a chosen moment)."""
    proc = ForkedPar(list(args), env, file_size_limit)
    if while_running is not None:
        while_running(proc)
    out, err = proc.communicate()
    return Result(proc.returncode, out, err, proc.pid)


_SERVER: dict[str, str] = {}


def readme_par_bin() -> str:
    """A folder whose `par` is tests/par_server.py's client of a server that imported par once (started on first
    use, one per test process, ended with it): the README's shell blocks put it first on their PATH."""
    if not _SERVER:
        import atexit
        import shutil
        import tempfile
        import time

        folder = Path(tempfile.mkdtemp(prefix="par-server-"))
        sock = folder / "socket"
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "par_server.py"), "serve", str(sock)],
                                env=par_env(), stdin=subprocess.DEVNULL)
        atexit.register(shutil.rmtree, folder, True)
        atexit.register(proc.kill)
        (folder / "bin").mkdir()
        shim = folder / "bin" / "par"
        shim.write_text(f"#!{sys.executable} -S\nimport sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                        f"from par_server import client\nclient({str(sock)!r}, sys.argv[1:])\n")
        shim.chmod(0o755)
        while not sock.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the par server ended ({proc.returncode}) before it was ready")
            time.sleep(0.05)
        _SERVER["bin"] = str(folder / "bin")
    return _SERVER["bin"]


def one_error_line(result) -> str:
    """The single `error: ...` line a failed `par` prints on stderr (exit code 2)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def digest(path: Path) -> str:
    """sha256 over a file, or over a folder's file names and bytes."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def needs_shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"{path} is absent: the real MARS/Duke annotation files live in ../shared/data")
    return path


def extract_config(out: Path, **kw):
    from par_pipeline.config import configure

    return configure("extract", None, [("test", {**TINY_EXTRACT, "out": str(out), **kw})])


def tiny_extract(manifest, out: Path, **kw):
    from par_pipeline.workflows.extract import extract

    cfg, recipe = extract_config(out, **kw)
    return extract(manifest, cfg, recipe)


def train_config(store, out, **kw):
    from par_pipeline.config import configure

    return configure("train", None, [("test", {**SMALL_TRAIN, "store": str(store), "out": str(out), **kw})])


def tiny_train(store, out, **kw):
    from par_pipeline.workflows.train import train

    cfg, recipe = train_config(store, out, **kw)
    return train(cfg, recipe)


def eval_config(store, checkpoint, **kw):
    from par_pipeline.config import build_config

    return build_config("eval", [("test", {"store": str(store), "checkpoint": str(checkpoint), "workers": 0, **kw})])


def tiny_eval(store, checkpoint, **kw):
    from par_pipeline.workflows.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(eval_config(store, checkpoint, **kw))


def model_config(**kw):
    """A complete fusion model config for tests (every field, as a checkpoint holds it): a small fusion model with
    these changes."""
    from par_pipeline.model.block import ModelConfig

    base = {"name": "test", "hidden": 64, "depth": 1, "heads": 4, "mlp_ratio": 4.0, "qkv_bias": True,
            "head_batchnorm": True, "fusion": True, "text_tokens": True, "drop_path": 0.1, "temporal": "mean",
            "input_dim": 32, "num_attributes": 5}
    return ModelConfig(**{**base, **kw})


def fault_points(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


@pytest.fixture(scope="session", autouse=True)
def session_temp_dir(tmp_path_factory) -> Path:
    """TMPDIR of this test process and of everything it starts (torchrun's rendezvous folders, MLflow's locks,
    browser profiles), and torch.compile's cache: a folder of the session's own, removed with it when the session
    passes, so that a machine running the suite often (CI) keeps nothing of it."""
    import multiprocessing.util
    import tempfile

    # multiprocessing's own folder (the fork server's socket) stays outside: it removes it at exit, after this one
    multiprocessing.util.get_temp_dir()
    folder = tmp_path_factory.mktemp("tmp", numbered=False)
    os.environ["TMPDIR"] = str(folder)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "torchinductor")  # else /tmp/torchinductor_<user>
    # the tiny TorchScript CLIPs' sha256s, listed as a user lists their own archives: one file for every test
    # process of the run (a session fixture built in one process is used by the others)
    from clip_weights import trust_file

    os.environ["PAR_TRUSTED_WEIGHTS"] = str(trust_file(tmp_path_factory.getbasetemp()))
    tempfile.tempdir = None  # gettempdir() caches its answer: ask again
    return folder


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from par_pipeline.tools.synth import plan_random, write_synth

    root = tmp_path_factory.mktemp("synth") / "mars"
    write_synth(root, plan_random("mars", 8, (3, 7), seed=1), workers=1)
    return root


def _manifest_of(root: Path, layout: str, folder: Path) -> Path:
    from par_pipeline.workflows.manifest import make_manifest

    path = folder / "manifest.jsonl"
    make_manifest(layout, root, path)
    return path


@pytest.fixture(scope="session")
def manifest_path(synth_root, tmp_path_factory) -> Path:
    return _manifest_of(synth_root, "mars", tmp_path_factory.mktemp("manifest"))


@pytest.fixture(scope="session")
def store_faults(manifest_path, tmp_path_factory) -> tuple[Path, list[str]]:
    """The small zarr store (the tiny CLIP, `TINY_EXTRACT`) and the fault points its extraction passed, in order."""
    from par_pipeline.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("store") / "tokens.zarr"
    log = out.with_name("faults.log")
    with environment({"PAR_TEST_FAULT_LOG": str(log)}):
        tiny_extract(read_manifest(manifest_path), out)
    return out, fault_points(log)


@pytest.fixture(scope="session")
def store_path(store_faults) -> Path:
    return store_faults[0]


@pytest.fixture(scope="session")
def h5_store(manifest_path, tmp_path_factory) -> Path:
    from par_pipeline.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("h5") / "tokens.h5"
    tiny_extract(read_manifest(manifest_path), out)
    return out


@pytest.fixture(scope="session")
def int8_store(manifest_path, tmp_path_factory) -> Path:
    from par_pipeline.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("int8") / "tokens.zarr"
    tiny_extract(read_manifest(manifest_path), out, dtype="int8")
    return out


@pytest.fixture(scope="session")
def views_store(manifest_path, tmp_path_factory) -> Path:
    """Three views of every training frame (frame, flip, one pad-and-crop view)."""
    from par_pipeline.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("views") / "tokens.zarr"
    tiny_extract(read_manifest(manifest_path), out, views=3)
    return out


@pytest.fixture(scope="session")
def duke(tmp_path_factory) -> dict[str, Path]:
    """A small Duke-layout dataset, its manifest and token store."""
    from par_pipeline.data.manifest import read_manifest
    from par_pipeline.tools.synth import plan_random, write_synth

    base = tmp_path_factory.mktemp("duke")
    root = base / "duke"
    write_synth(root, plan_random("duke", 8, (3, 5), seed=2), "duke", workers=1)
    manifest = _manifest_of(root, "duke", base)
    store = base / "tokens.zarr"
    tiny_extract(read_manifest(manifest), store)
    return {"root": root, "manifest": manifest, "store": store}


SCENE_PEOPLE, SCENE_SECONDS = 4, 8


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Path:
    """A small synthetic camera scene (`par synth --video`): 4 people, 8 s at 10 fps, 320 x 180."""
    out = tmp_path_factory.mktemp("scene") / "street"
    run_par("synth", out, "--video", "--people", SCENE_PEOPLE, "--seconds", SCENE_SECONDS, "--width", 320,
            "--height", 180, "--seed", 3)
    return out


@pytest.fixture(scope="session")
def tracked(scene, run_path, tmp_path_factory):
    """`par track` of the scene with the ground-truth boxes as detections, with every output (OUT, the annotated
    video, crops split between train and test, an alert rule); shared by the track, page and alert tests."""
    base = tmp_path_factory.mktemp("tracked")
    run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", base / "out", "--detections",
            scene / "gt" / "gt.txt", "--annotate", base / "annotated.mp4", "--save-crops", base / "crops",
            "--crops-train", 0.5, "--alert", "backpack = no, hat")
    return base


@pytest.fixture(scope="session")
def run_faults(store_path, tmp_path_factory) -> tuple[Path, list[str]]:
    """A trained run (`SMALL_TRAIN`: 2 epochs) shared by tests that only read it, and the fault points it passed."""
    run = tmp_path_factory.mktemp("run") / "run"
    log = run.with_name("faults.log")
    with environment({"PAR_TEST_FAULT_LOG": str(log)}):
        tiny_train(store_path, run)
    return run, fault_points(log)


@pytest.fixture(scope="session")
def run_path(run_faults) -> Path:
    return run_faults[0]


@dataclass
class OpenedPage:
    """A page opened from disk in the real browser, with what it printed and every request it made."""
    page: object
    console: list[str]
    requests: list[str]

    def check_clean(self, path: Path) -> None:
        """Loaded without console errors or uncaught exceptions, and asked nothing but the file itself."""
        assert self.console == [], self.console
        assert self.requests == [path.resolve().as_uri()], self.requests


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (par_pipeline/pages/browser.py)."""
    from par_pipeline.pages.browser import headless_chromium

    with headless_chromium() as b:
        yield b


@pytest.fixture
def open_page(browser):
    """open_page(path) -> OpenedPage; the pages are closed after the test."""
    contexts = []

    def opener(path: Path, width: int = 1300, height: int = 900) -> OpenedPage:
        ctx = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(ctx)
        page = ctx.new_page()
        # A page from disk loads in under a second here, but a CI machine's two test processes can starve the
        # browser's renderer for seconds (a 5 s load limit failed there): loading gets a minute, a missing element
        # still fails in seconds.
        page.set_default_navigation_timeout(60_000)
        page.set_default_timeout(15_000)
        console: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: console.append(f"uncaught: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(Path(path).resolve().as_uri(), wait_until="load")
        return OpenedPage(page, console, requests)

    yield opener
    for ctx in contexts:
        ctx.close()


def shared_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once for the whole test run, by whichever test process asks first (the others wait for it):
    state that several scopes (classes that different test processes run) share, e.g. the README's MARS workflow
    that later blocks continue."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the folder all workers share
    folder, done, failed = root / name, root / f"{name}.done", root / f"{name}.failed"
    with FileLock(str(root / f"{name}.lock")):
        if failed.exists():
            pytest.fail(f"building the shared {name} failed in another test process:\n{failed.read_text()}")
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            try:
                build(folder)
            except BaseException as exc:
                failed.write_text(str(exc)[-5000:])
                raise
            done.touch()
    return folder


# `make test` hands whole scopes to its two processes (`--dist loadscope`): a test file, or a test class in it. A
# file's tests stay together; a file whose parts share state through `shared_once` splits into classes that two
# processes run side by side. Scopes start in this order, the longest first, so that neither process ends with a
# long one alone; the builders of shared state come first, so that its users find it ready.
LONGEST_FIRST = ("TestMarsWorkflow", "TestMakeDemo", "test_live.py", "test_train.py", "test_experiments.py",
                 "TestMakeTrackBench", "test_kill.py", "test_export.py", "TestGpuCheckTrack", "TestLive",
                 "TestTrackers", "TestAblationAndComparison", "TestCrops", "TestFootage", "TestExport", "TestLink",
                 "test_track.py", "TestTorchrun", "test_yolo.py", "test_packaging.py", "TestGpuCheckChain",
                 "TestGpuCheckAlone", "test_cli.py", "TestDuke", "TestMakeBench", "TestPredict", "TestImport",
                 "test_extract.py", "TestMakeAblation", "test_ablation.py", "test_pages.py", "test_import.py",
                 "test_cache.py", "test_weights.py", "test_alerts.py")


def test_scope(item) -> str:
    """The scope a test goes to a test process with: its class, or else its file."""
    return item.cls.__name__ if item.cls is not None else item.path.name


def pytest_collection_modifyitems(items):
    def rank(item):
        scope = test_scope(item)
        return LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)
