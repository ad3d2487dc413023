"""Stage two: train the fusion Transformer and heads from the token store (CLIP never runs here)."""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from .atomic import atomic_path, write_json_atomic, write_text_atomic
from .checkpoint import save_checkpoint
from .distributed import DistContext
from .errors import ParError
from .losses import attribute_loss
from .metrics import evaluate_predictions
from .model import VTFPAR, load_fusion_init, load_model_config
from .samples import EpochBatches, TrackletTokens, tracklet_batches
from .store import TokenStore


@dataclass
class TrainConfig:
    store: str = ""
    out: str = "runs/vtf-par"
    model: str = "vtf-par"
    fusion: bool = True
    text_tokens: bool = True
    text_source: str = "prompts"  # "phrases": text features of the bare phrases (prompt template off)
    depth: int | None = None
    fusion_init: str | None = None
    frames: int = 6
    eval_frames: int | None = None  # default: the training T
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 5
    loss: str = "weighted"  # "weighted" (SPEC §2) or "bce"
    seed: int = 0
    workers: int | None = None  # loader worker processes; None: `loader_workers` picks for the device
    device: str = "cpu"
    amp: str = "auto"  # auto: bf16 autocast on GPU, off on CPU
    threshold: float = 0.45
    train_split: str = "train"
    eval_split: str = "test"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ParError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_epochs: int) -> float:
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero, per optimiser step."""
    total = max(1, steps_per_epoch * epochs)
    warm = steps_per_epoch * min(warmup_epochs, epochs)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_model(cfg: TrainConfig, store: TokenStore) -> VTFPAR:
    mcfg = load_model_config(cfg.model, fusion=cfg.fusion, text_tokens=cfg.text_tokens, depth=cfg.depth,
                             input_dim=store.dim, num_attributes=len(store.attribute_names))
    model = VTFPAR(mcfg, torch.from_numpy(store.text_features(cfg.text_source)))
    if cfg.fusion_init:
        load_fusion_init(model, cfg.fusion_init)
    return model


def _autocast(device: torch.device, amp: str) -> tuple[bool, torch.dtype]:
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return False, torch.float32
    if amp in ("auto", "bf16"):
        return True, torch.bfloat16
    if amp == "fp16":
        return True, torch.float16
    raise ParError(f"--amp must be auto, off, bf16 or fp16, not '{amp}'")


def input_dtype(device: torch.device, amp: str) -> torch.dtype:
    """dtype of the mean tokens fed to the model: the autocast dtype when AMP is on (its first Linear rounds
    to it anyway, and it halves the bytes moved to the GPU), else float32."""
    on, dtype = _autocast(device, amp)
    return dtype if on else torch.float32


class TrainingStep:
    """One optimiser step as `par train` takes it (loss, AMP, Adam, per-step schedule); `make bench` times the
    same object on in-memory tensors, so the two figures differ only by data loading."""

    def __init__(self, model: torch.nn.Module, ddp: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int,
                 pos_rate: torch.Tensor):
        device = pos_rate.device
        self.ddp, self.pos_rate = ddp, pos_rate if cfg.loss == "weighted" else None
        self.amp_on, self.amp_dtype = _autocast(device, cfg.amp)
        # fused Adam on the GPU: one kernel instead of a few per parameter group (the fusion model is small,
        # so kernel launches, not FLOPs, set the step time); on the CPU the default, bit-reproducible path.
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                          fused=True if device.type == "cuda" else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, steps_per_epoch, cfg.epochs, cfg.warmup_epochs))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_on and self.amp_dtype == torch.float16)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on one batch (already on the device); returns the detached loss, without waiting for it."""
        with torch.autocast(x.device.type, dtype=self.amp_dtype, enabled=self.amp_on):
            logits = self.ddp(x)
        loss = attribute_loss(logits.float(), y, self.pos_rate)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()


def loader_workers(requested: int | None, device: torch.device) -> int:
    """`--workers`, or by default: on a GPU the CPUs this rank may use, less two (the training loop and the
    pin-memory thread), at most 16; on a CPU of up to 4 cores none (the model's own threads already use every
    core; in-process loading measured as fast as 2 workers on 2 cores and spares the processes), else 2."""
    if requested is not None:
        return requested
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    per_rank = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type != "cuda":
        return 0 if per_rank <= 4 else 2
    return max(1, min(16, per_rank - 2))


def training_loader(cfg: TrainConfig, train_idx: np.ndarray, device: torch.device,
                    dist: DistContext | None = None) -> tuple[DataLoader, EpochBatches]:
    """Training batches (x [B, N, D] in the autocast dtype on GPU, y [B, A], index) from worker processes;
    call `sampler.set_epoch(e)` before each epoch."""
    dist = dist or DistContext.single()
    train_set = TrackletTokens(cfg.store, cfg.frames, cfg.seed, input_dtype(device, cfg.amp))
    sampler = EpochBatches(train_idx, cfg.batch_size, cfg.seed, shuffle=True, rank=dist.rank, world=dist.world_size)
    workers = loader_workers(cfg.workers, device)
    return tracklet_batches(train_set, sampler, workers, device.type == "cuda", persistent=True), sampler


@torch.no_grad()
def predict_split(model: torch.nn.Module, dataset: TrackletTokens, indices: np.ndarray, batch_size: int, workers: int,
                  device: torch.device, amp: str = "auto") -> np.ndarray:
    """Sigmoid probabilities [n, A] on the deterministic evaluation frames."""
    model.eval()
    loader = tracklet_batches(dataset, EpochBatches(indices, max(batch_size, 64), 0, shuffle=False), workers,
                              device.type == "cuda")
    on, dtype = _autocast(device, amp)
    out = []
    for x, _, _ in loader:
        with torch.autocast(device.type, dtype=dtype, enabled=on):
            logits = model(x.to(device, non_blocking=True))
        out.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(dataset.store.attribute_names)), np.float32)


def train(cfg: TrainConfig, resume: bool = False, dist: DistContext | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train; returns the best epoch's record. Writes the run folder `cfg.out` (README: checkpoints)."""
    dist = dist or DistContext.single()
    store = TokenStore(cfg.store)
    train_idx, eval_idx = store.indices(cfg.train_split), store.indices(cfg.eval_split)
    train_idx = np.array([i for i in train_idx if store.valid_rows(i).size], dtype=np.int64)
    if len(train_idx) < 2:
        raise ParError(f"{cfg.store}: fewer than 2 '{cfg.train_split}' tracklets with frames; nothing to train on")
    if cfg.frames < 1 or cfg.epochs < 1 or cfg.batch_size < 2:
        raise ParError("--frames and --epochs must be >= 1 and --batch-size >= 2")
    if cfg.loss not in ("weighted", "bce"):
        raise ParError(f"--loss must be 'weighted' or 'bce', not '{cfg.loss}'")
    run = Path(cfg.out)
    device = torch.device(cfg.device)
    set_seed(cfg.seed)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    model = build_model(cfg, store).to(device)
    if dist.enabled:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        ddp = model
    pos_rate = torch.from_numpy(store.labels[train_idx].mean(0).astype(np.float32)).to(device)
    eval_set = TrackletTokens(cfg.store, cfg.eval_frames or cfg.frames, cfg.seed, input_dtype(device, cfg.amp))
    eval_workers = loader_workers(cfg.workers, device)
    loader, sampler = training_loader(cfg, train_idx, device, dist)
    steps_per_epoch = len(sampler)
    steps = TrainingStep(model, ddp, cfg, steps_per_epoch, pos_rate)
    optimizer, scheduler = steps.optimizer, steps.scheduler

    identity = store.identity
    start_epoch, best, history = 0, None, []
    state_path = run / "last.state.pt"
    if resume and state_path.exists():
        start_epoch, best, history = _restore(run, model, optimizer, scheduler, cfg, identity)
    elif dist.is_main:
        if (run / "last.json").exists() and not resume:
            raise ParError(f"{run}: already holds a run; pass --resume to continue it or choose another --out")
        run.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run / "config.json", {"train": asdict(cfg), "model": model.cfg.to_dict()})
    dist.barrier()

    meta_base = {"schema": store.attrs["schema"], "attributes": store.attribute_names,
                 "group_boundaries": store.attrs["group_boundaries"], "groups": store.attrs["groups"],
                 "store_identity": identity, "store_path": cfg.store, "frames": cfg.frames,
                 "eval_frames": cfg.eval_frames or cfg.frames, "threshold": cfg.threshold, "train_config": asdict(cfg)}
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        ddp.train()
        # The loss is summed on the device: reading it every step would stall the GPU queue each step.
        total_loss, seen, first, t_first = torch.zeros((), device=device), 0, 0, 0.0
        for step, (x, y, _) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            total_loss += steps.step(x, y) * len(y)
            seen += len(y)
            if step == 0:  # the rate leaves out the epoch's first batch (loader start-up)
                first, t_first = len(y), time.perf_counter()
            if on_step and dist.is_main:
                on_step(epoch * steps_per_epoch + step + 1, cfg.epochs * steps_per_epoch)
        loss = float(total_loss)  # waits for the epoch's last step: the rate below is of finished work
        elapsed = time.perf_counter() - t_first
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": loss / max(1, seen), "lr": scheduler.get_last_lr()[0],
                                  "samples_per_s": (seen - first) * dist.world_size / elapsed if seen > first and elapsed > 0 else None}
        if dist.is_main:
            probs = predict_split(model, eval_set, eval_idx, cfg.batch_size, eval_workers, device, cfg.amp)
            metrics = evaluate_predictions(probs, store.labels[eval_idx], store.attrs["group_boundaries"],
                                           store.attrs["groups"], cfg.threshold)
            record.update({k: metrics["protocol"]["mean"][k] for k in ("precision", "recall", "f1", "mA")})
            record["label_mA"] = metrics["standard"]["label_mA"]
            history.append(record)
            is_best = best is None or record["f1"] > best["f1"]
            meta = {**meta_base, "epoch": epoch + 1, "metrics": metrics}
            if is_best:
                best = record
                save_checkpoint(model, run / "best", meta)
            save_checkpoint(model, run / "last", meta)
            with atomic_path(state_path) as tmp:
                torch.save({"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "torch_rng": torch.get_rng_state(), "best": best, "history": history}, tmp)
            write_text_atomic(run / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
            if on_epoch:
                on_epoch(record)
        dist.barrier()
    store.close()
    return best or {}


def _restore(run: Path, model: VTFPAR, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig,
             identity: dict[str, Any]) -> tuple[int, dict[str, Any] | None, list[dict[str, Any]]]:
    from safetensors.torch import load_file

    from .store import check_identity

    saved = json.loads((run / "config.json").read_text())
    # Options that change no result may differ on resume (sampling is keyed by seed, epoch and tracklet).
    free = ("workers",)
    now = {k: v for k, v in asdict(cfg).items() if k not in free}
    if {k: v for k, v in saved["train"].items() if k not in free} != now:
        diff = sorted(k for k in now if saved["train"].get(k) != now[k])
        raise ParError(f"{run}/config.json: --resume with different options {diff}; use the run's options or a new --out")
    last = json.loads((run / "last.json").read_text())
    check_identity(last["store_identity"], identity, "token store", cfg.store, "resume with the store the run began on")
    model.load_state_dict(load_file(str(run / "last.safetensors")))
    state = torch.load(run / "last.state.pt", map_location="cpu", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), state["best"], list(state["history"])
