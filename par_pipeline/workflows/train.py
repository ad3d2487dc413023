"""Stage two: train the fusion Transformer and heads from the token store (CLIP never runs here).

Every epoch: train on the training split, evaluate the evaluation split (and the validation persons with
`val_fraction`), then commit the epoch's checkpoint set (run.RunFolder). The best epoch is selected on the test
split as the reference does, unless a person-disjoint validation part of the training split is held out.
A killed run resumes from its last committed epoch and ends bit-identical to an uninterrupted one (CPU).
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..compiling import check_compile_mode
from ..config import TrainConfig, check_device
from ..distributed import DistContext
from ..engine.inference import predict_split
from ..engine.metrics import evaluate_predictions, headline
from ..engine.resident import ResidentRows, hold, rows_of
from ..engine.splits import training_and_validation
from ..engine.step import TrainingStep, deterministic
from ..engine.tokens import EpochBatches, TogetherTokens, TrackletTokens, default_workers, tracklet_batches
from ..errors import ParError
from ..experiments import ExperimentLog, TrackedRun, Warn, check_trackers, hyperparameters
from ..model.block import load_model_config
from ..model.checkpoint import checkpoint_files, load_checkpoint, load_state
from ..model.fusion import VTFPAR, load_fusion_init
from ..options import as_dict, results_view
from ..outputs import claim_dir, exclusive, fault_point, read_marker, remove_own
from ..precision import autocast_dtype, input_dtype
from ..run import LOG_FILE, RUN_KIND, RunFolder, check_store_matches, checkpoint_meta
from ..store.reader import TokenStore

RUN_CONFIG_FORMAT = "par-run-config"
Loading = Callable[[str, int, int], None]  # (what, rows done, rows in all): --cache ram's load, with its reason


def build_model(cfg: TrainConfig, store: TokenStore) -> tuple[VTFPAR, dict[str, Any]]:
    """The model and the record of how its fusion part was initialised."""
    mcfg = load_model_config(cfg.model, fusion=cfg.fusion, text_tokens=cfg.text_tokens, drop_path=cfg.drop_path,
                             temporal=cfg.temporal, input_dim=store.dim, num_attributes=len(store.attribute_names),
                             depth=cfg.depth)
    model = VTFPAR(mcfg, torch.from_numpy(store.text_features(cfg.text_source)))
    if not cfg.fusion:
        return model, {"kind": "none (no fusion Transformer)"}
    if cfg.fusion_init is None and cfg.require_fusion_init:
        raise ParError(f"recipe {cfg.recipe} initialises the fusion block and final norm from an ImageNet ViT-B/16: "
                       f"pass --fusion-init /path/to/jx_vit_base_p16_224-80ecf9dd.pth (or timm:<model name> when "
                       f"online), or --fusion-init random to train them from scratch")
    return model, load_fusion_init(model, cfg.fusion_init or "random")


def rows_to_hold(cfg: TrainConfig, store: TokenStore) -> np.ndarray:
    """Every store row a run of `cfg` can draw (what --cache ram/device holds): its training tracklets' valid frames
    (every stored view when views are drawn) and its evaluation and validation tracklets' evaluation rows."""
    train_idx, val_idx = training_and_validation(store, cfg.train_split, cfg.val_fraction, cfg.seed)
    train_set = TrackletTokens(str(store.path), cfg.frames, cfg.seed, use_views=cfg.use_views)
    eval_set = TrackletTokens(str(store.path), cfg.eval_frames or cfg.frames, cfg.seed, sampling=cfg.eval_sampling)
    return rows_of([train_set.possible_rows(train_idx, True),
                    eval_set.possible_rows(np.concatenate([store.indices(cfg.eval_split), val_idx]), False)])


class Trainer:
    """One training run: its store, splits, model, loaders and run folder."""

    def __init__(self, cfg: TrainConfig, recipe: dict[str, Any], dist: DistContext):
        check_device(cfg.device)
        check_compile_mode(cfg.fusion_compile, cfg.device)
        self.cfg, self.recipe, self.dist = cfg, recipe, dist
        self.device = torch.device(cfg.device)
        self.store = store = TokenStore(cfg.store)
        store.check_shards()
        self.eval_idx = store.indices(cfg.eval_split)
        empty = [store.tracklets[i] for i in self.eval_idx[store.valid_counts(self.eval_idx) == 0]]
        if empty:
            raise ParError(f"{cfg.store}: {len(empty)} '{cfg.eval_split}' tracklet(s) have no readable frames (e.g. "
                           f"{empty[0]}; all skipped at extraction); fix their frames and extract again")
        self.train_idx, self.val_idx = training_and_validation(store, cfg.train_split, cfg.val_fraction, cfg.seed)
        if len(self.train_idx) < max(2, dist.world_size):
            raise ParError(f"{cfg.store}: fewer than 2 '{cfg.train_split}' tracklets with frames; nothing to train on")
        self.amp = autocast_dtype(cfg.precision, self.device)
        self.run = RunFolder(cfg.out)
        if dist.is_main:
            check_trackers(cfg.log_to)
        self.workers = default_workers(cfg.workers, self.device)

    def datasets(self, model: VTFPAR, loading: Loading | None = None,
                 resident: ResidentRows | None = None) -> tuple[TrackletTokens, TrackletTokens]:
        """The training and evaluation datasets; with --cache ram/device their rows held in memory (`resident`: rows
        a sweep loaded once for all its points; else loaded here)."""
        cfg, keep = self.cfg, model.cfg.needs_frames
        dtype = input_dtype(self.device, cfg.precision)
        train_set = TrackletTokens(cfg.store, cfg.frames, cfg.seed, dtype, keep_frames=keep, use_views=cfg.use_views)
        eval_set = TrackletTokens(cfg.store, cfg.eval_frames or cfg.frames, cfg.seed, dtype, keep_frames=keep,
                                  sampling=cfg.eval_sampling)
        if resident is None and cfg.cache != "disk":
            note = "; batches are built in this process (no loader workers)" if self.workers else ""
            resident = hold(cfg.cache, self.store, rows_to_hold(cfg, self.store), self.device, loading, note)
        if resident is not None:
            train_set.resident = eval_set.resident = resident
            self.workers = 0  # the rows live in this process; a worker would need a copy of them
        return train_set, eval_set

    def training_loader(self, train_set: TrackletTokens) -> tuple[DataLoader, EpochBatches]:
        sampler = EpochBatches(self.train_idx, self.cfg.batch_size, self.cfg.seed, shuffle=True, rank=self.dist.rank,
                               world=self.dist.world_size)
        return tracklet_batches(train_set, sampler, self.workers, self.device.type == "cuda", persistent=True), sampler

    def evaluate(self, model: VTFPAR, eval_set: TrackletTokens, indices: np.ndarray) -> dict[str, Any]:
        probs = predict_split(model, eval_set, indices, self.workers, self.device, self.amp)
        a = self.store.attrs
        return evaluate_predictions(probs, self.store.labels[indices], a["group_boundaries"], a["groups"],
                                    self.cfg.threshold)


@contextlib.contextmanager
def opened_run(cfg: TrainConfig, recipe: dict[str, Any], resume: bool,
               dist: DistContext) -> Iterator[tuple[Trainer, VTFPAR, dict[str, Any], bool]]:
    """A run's trainer and freshly initialised model (from the global RNG, which the caller seeds), its folder
    claimed, locked and holding its options; (trainer, model, fusion_init, resume). A folder this call made and
    committed nothing to is removed on failure."""
    trainer = Trainer(cfg, recipe, dist)
    run = trainer.run
    model, fusion_init = build_model(cfg, trainer.store)  # every option checked before anything is written
    created = False
    if resume and not run.config_path.exists():
        marker = read_marker(run.path) if run.path.is_dir() else None
        if marker is None or marker.get("kind") != RUN_KIND:
            raise ParError(f"{cfg.out}: no run to resume there; drop --resume to start one")
        resume = False  # a run killed before it wrote its options: nothing to resume, so it starts
    if dist.is_main:
        created = not run.path.exists()
        claim_dir(run.path, RUN_KIND)
    try:
        with exclusive(run.path, "train") if dist.is_main else contextlib.nullcontext():
            if dist.is_main and not resume:
                if run.config_path.exists():
                    raise ParError(f"{cfg.out}: already holds a run; pass --resume to continue it or choose "
                                   f"another --out")
                run.write_config({"format": RUN_CONFIG_FORMAT, "version": 1, "train": as_dict(cfg), "recipe": recipe})
            dist.barrier()
            yield trainer, model, fusion_init, resume
    except BaseException:
        if created and not run.exists():  # this call made the folder and committed nothing: leave nothing behind
            remove_own(run.path)
        raise


def _deterministic(cfg: TrainConfig, device: torch.device) -> bool:
    return {"auto": device.type == "cpu", "on": True, "off": False}[cfg.deterministic]


def train(cfg: TrainConfig, recipe: dict[str, Any], resume: bool = False, dist: DistContext | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None, group: dict[str, dict[str, Any]] | None = None,
          warn: Warn | None = None, loading: Loading | None = None,
          resident: ResidentRows | None = None) -> dict[str, Any]:
    """Train; returns the selected epoch's record. Writes the run folder `cfg.out` (README: checkpoints); with
    `cfg.log_to`, the main process also logs to those experiment trackers (`group`: a sweep's, from
    `experiments.open_sweep`; `warn` hears of a tracker that fails); `loading` hears --cache's choice and load,
    `resident` gives rows already held (a sweep's)."""
    dist = dist or DistContext.single()
    check_device(cfg.device)
    device = torch.device(cfg.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG comes back
        torch.manual_seed(cfg.seed)
        with opened_run(cfg, recipe, resume, dist) as (trainer, model, fusion_init, resume):
            with deterministic(_deterministic(cfg, trainer.device)):
                point = PointRun(trainer, model, fusion_init, resume, on_epoch, group or {}, warn, loading, resident)
                loader, sampler = trainer.training_loader(point.train_set)
                try:
                    for epoch in range(point.start_epoch, cfg.epochs):
                        sampler.set_epoch(epoch)
                        point.begin_epoch(epoch)
                        for x, y, _ in loader:
                            point.train_step(x.to(trainer.device, non_blocking=True),
                                             y.to(trainer.device, non_blocking=True))
                        point.end_epoch(epoch)
                        dist.barrier()
                except BaseException:
                    point.close(ok=False)
                    raise
                return point.finish()


class PointRun:
    """One run through its epochs: its model, optimiser step, evaluation, commits, trackers and, when it trains side
    by side with others (`train_together`), its own torch RNG state between its turns."""

    def __init__(self, trainer: Trainer, model: VTFPAR, fusion_init: dict[str, Any], resume: bool,
                 on_epoch: Callable[[dict[str, Any]], None] | None, group: dict[str, dict[str, Any]],
                 warn: Warn | None, loading: Loading | None, resident: ResidentRows | None):
        cfg, dist, store, run, device = trainer.cfg, trainer.dist, trainer.store, trainer.run, trainer.device
        self.trainer, self.model, self.on_epoch = trainer, model, on_epoch
        model.to(device)
        self.ddp = model
        if dist.enabled:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        pos_rate = torch.from_numpy(store.labels[trainer.train_idx].mean(0).astype(np.float32)).to(device)
        self.steps = TrainingStep(model, lr=cfg.lr, weight_decay=cfg.weight_decay, epochs=cfg.epochs,
                                  warmup_epochs=cfg.warmup_epochs, warmup_lr=cfg.warmup_lr, min_lr=cfg.min_lr,
                                  amp=trainer.amp, pos_rate=pos_rate if cfg.loss == "weighted" else None, ddp=self.ddp,
                                  compile_mode=cfg.fusion_compile, warn=warn if dist.is_main else None)
        self.train_set, self.eval_set = trainer.datasets(model, loading, resident)
        self.start_epoch, self.best, self.history = 0, None, []
        if resume:
            if dist.is_main:
                run.recover()
            dist.barrier()
            self.start_epoch, self.best, self.history = _restore(trainer, model, self.steps)
        self.meta_base = checkpoint_meta(cfg, trainer.recipe, store, fusion_init)
        self.log = None
        if dist.is_main and cfg.log_to:  # one tracked run per run folder: DDP logs from rank 0 only
            self.log = ExperimentLog(cfg.log_to, TrackedRun(run.path, cfg.experiment, group), warn)
            self.log.start(hyperparameters(run.read_config(), store.identity), self.history)
        self.rng = _rng_state(device)  # after initialisation (or the restored state): what `turn` starts from

    def begin_epoch(self, epoch: int) -> None:
        self.lr = self.steps.start_epoch(epoch)
        self.ddp.train()
        # The loss is summed on the device: reading it every step would stall the GPU queue each step.
        self.total_loss = torch.zeros((), device=self.trainer.device)
        self.seen, self.first, self.t_first = 0, 0, 0.0

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.total_loss += self.steps.step(x, y) * len(y)
        if self.seen == 0:  # the rate leaves out the epoch's first batch (loader start-up)
            self.first, self.t_first = len(y), time.perf_counter()
        self.seen += len(y)

    def end_epoch(self, epoch: int) -> None:
        """The epoch's loss, evaluation and commit (main process), then its trackers and callback."""
        trainer, seen, first = self.trainer, self.seen, self.first
        cfg, dist, run = trainer.cfg, trainer.dist, trainer.run
        loss = float(self.total_loss) / max(1, seen)  # waits for the epoch's last step: the rate is of finished work
        elapsed = time.perf_counter() - self.t_first
        if not math.isfinite(loss):
            raise ParError(
                f"{cfg.out}: the training loss became {loss} in epoch {epoch + 1}; nothing of this epoch was "
                f"saved (the last good epoch is in last.json) - lower --lr, or check the store with "
                f"`par verify {cfg.store}`"
            )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": loss,
            "lr": self.lr,
            "samples_per_s": (seen - first) * dist.world_size / elapsed if seen > first and elapsed > 0 else None,
        }
        if not dist.is_main:
            return
        metrics = trainer.evaluate(self.model, self.eval_set, trainer.eval_idx)
        record.update(headline(metrics))
        val_metrics = None
        if len(trainer.val_idx):
            val_metrics = trainer.evaluate(self.model, self.eval_set, trainer.val_idx)
            record["val_f1"] = val_metrics["protocol"]["mean"]["f1"]
        key = "val_f1" if val_metrics is not None else "f1"
        self.history.append(record)
        is_best = self.best is None or record[key] > self.best[key]
        meta = {**self.meta_base, "epoch": epoch + 1, "metrics": metrics, "val_metrics": val_metrics}
        if is_best:
            self.best = record
        state = {"epoch": epoch + 1, "step": self.steps.state_dict(), "torch_rng": torch.get_rng_state(),
                 "best": self.best, "history": self.history}
        files = checkpoint_files(self.model, "last", meta, state)
        if is_best:
            files.update(checkpoint_files(self.model, "best", meta))
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        files[LOG_FILE] = lambda p, text=lines: p.write_text(text)
        run.commit(files)
        fault_point("epoch-committed")
        if self.log:
            self.log.epoch(record)
        if self.on_epoch:
            self.on_epoch(record)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """This run's torch RNG (initialisation and DropPath draws) while it acts among others."""
        torch.set_rng_state(self.rng[0])
        if self.rng[1] is not None:
            torch.cuda.set_rng_state(self.rng[1], self.trainer.device)
        try:
            yield
        finally:
            self.rng = _rng_state(self.trainer.device)

    def close(self, ok: bool) -> None:
        if self.log:
            self.log.close(ok=ok)
            self.log = None

    def finish(self) -> dict[str, Any]:
        """The selected epoch's record (to its trackers too); the run's store closed."""
        best = self.best or {}
        if self.log and best:
            self.log.selected(best)
        self.close(ok=True)
        self.trainer.store.close()
        return best


def saved_options(out: str) -> tuple[str | None, dict[str, Any]]:
    """(recipe name, train options) of the run in `out` as it began (its config.json), for `--resume` given with
    nothing else; ({} when there is no run there: the usual checks then say what is missing)."""
    run = RunFolder(Path(out))
    if not run.config_path.is_file():
        return None, {}
    saved = run.read_config()
    return saved.get("recipe", {}).get("name"), dict(saved.get("train", {}))


def _restore(
    trainer: Trainer, model: VTFPAR, steps: TrainingStep
) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
    """Load the last committed epoch; the run's options and store must be the ones it began with."""
    cfg, run = trainer.cfg, trainer.run
    saved = run.read_config()
    now = results_view(cfg)
    before = {k: saved["train"].get(k) for k in now}
    if before != now:
        diff = sorted(k for k in now if before[k] != now[k])
        raise ParError(f"{run.config_path}: --resume with different options {diff}; use the run's options or a new "
                       f"--out")
    if not run.exists():  # killed before its first epoch was committed: start from the beginning
        return 0, None, []
    last_model, meta = load_checkpoint(run.checkpoint_json("last"))
    check_store_matches(meta, trainer.store.identity, cfg.store)
    model.load_state_dict(last_model.state_dict())
    state = load_state(Path(meta["_path"]), meta)
    steps.load_state_dict(state["step"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), state["best"], list(state["history"])


# The options that make runs read the same batches in the same order: runs equal in these train side by side.
TOGETHER_KEYS = ("store", "seed", "batch_size", "epochs", "train_split", "val_fraction", "use_views", "precision",
                 "device", "cache", "workers", "deterministic")


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def train_together(runs: list[tuple[TrainConfig, dict[str, Any], bool]],
                   on_epoch: Callable[[dict[str, Any]], None] | None = None,
                   group: dict[str, dict[str, Any]] | None = None, warn: Warn | None = None,
                   resident: ResidentRows | None = None) -> list[dict[str, Any]]:
    """Runs (config, recipe, resume) equal in `TOGETHER_KEYS`, trained side by side from one read of each batch
    (the rows of every run's draw, nested prefixes of one draw, read once): each run keeps its own model, optimiser,
    RNG, evaluation, commits and trackers, and ends with the checkpoint, log and figures `train` gives it alone.
    Each resumes from its own last committed epoch. Returns each run's selected epoch's record."""
    first = runs[0][0]
    for cfg, _, _ in runs:
        differ = [k for k in TOGETHER_KEYS if getattr(cfg, k) != getattr(first, k)]
        if differ:
            raise ParError(f"{cfg.out}: cannot train side by side with {first.out}: they differ in {differ}")
    check_device(first.device)
    device, dist = torch.device(first.device), DistContext.single()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), contextlib.ExitStack() as stack:
        stack.enter_context(deterministic(_deterministic(first, device)))
        points: list[PointRun] = []
        for cfg, recipe, resume in runs:
            torch.manual_seed(cfg.seed)
            trainer, model, fusion_init, resume = stack.enter_context(opened_run(cfg, recipe, resume, dist))
            points.append(PointRun(trainer, model, fusion_init, resume, on_epoch, group or {}, warn, None, resident))
        sets = {}
        for p in points:
            sets.setdefault((p.trainer.cfg.frames, p.train_set.keep_frames), p.train_set)
        sampler = EpochBatches(points[0].trainer.train_idx, first.batch_size, first.seed, shuffle=True)
        loader = tracklet_batches(TogetherTokens(sets), sampler, points[0].trainer.workers, device.type == "cuda",
                                  persistent=True)
        try:
            for epoch in range(min(p.start_epoch for p in points), first.epochs):
                active = [p for p in points if p.start_epoch <= epoch]
                sampler.set_epoch(epoch)
                for p in active:
                    with p.turn():
                        p.begin_epoch(epoch)
                for xs, y, _ in loader:
                    y = y.to(device, non_blocking=True)
                    for p in active:
                        x = xs[(p.trainer.cfg.frames, p.train_set.keep_frames)].to(device, non_blocking=True)
                        with p.turn():
                            p.train_step(x, y)
                for p in active:
                    with p.turn():
                        p.end_epoch(epoch)
        except BaseException:
            for p in points:
                p.close(ok=False)
            raise
        return [p.finish() for p in points]
