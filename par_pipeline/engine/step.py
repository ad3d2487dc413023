"""One optimiser step as `par train` takes it, and the learning-rate schedule (timm's CosineLRScheduler, stepped per
epoch with the 1-based epoch number as the reference does: with 20 epochs and 5 warm-up epochs from 1e-5, the first
epoch trains at 2.08e-4 and the rate peaks at 8.54e-4 in epoch 5, never reaching the base 1e-3)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from ..compiling import compiled_or_eager
from ..imports import timm_module
from ..precision import autocast
from .losses import attribute_loss

CosineLRScheduler = timm_module("timm.scheduler").CosineLRScheduler  # par's first import of timm: without wandb


def cosine_schedule(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int, warmup_lr: float,
                    min_lr: float) -> CosineLRScheduler:
    return CosineLRScheduler(optimizer, t_initial=epochs, lr_min=min_lr, warmup_t=warmup_epochs,
                             warmup_lr_init=warmup_lr, cycle_limit=1, t_in_epochs=True)


class TrainingStep:
    """Adam, the per-epoch cosine schedule, autocast and the weighted loss; `make bench` times this same object on
    in-memory tensors, so its figure and `par train`'s differ only by data loading."""

    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float, epochs: int, warmup_epochs: int,
                 warmup_lr: float, min_lr: float, amp: torch.dtype | None, pos_rate: torch.Tensor | None,
                 ddp: torch.nn.Module | None = None, compile_mode: str = "eager",
                 warn: Callable[[str], None] | None = None):
        """`pos_rate`: each attribute's positive rate for the weighted loss (None: plain BCE); `ddp`: the model
        wrapped in DistributedDataParallel, when several ranks train; `compile_mode`: how its forward (and so its
        backward) runs (`compiling.COMPILE_MODES`; `warn` hears of a compilation that fell back to eager)."""
        device = next(model.parameters()).device
        self.ddp, self.pos_rate, self.amp, self.device = ddp or model, pos_rate, amp, device
        self.compile_mode = compile_mode
        self.forward = compiled_or_eager(self.ddp, compile_mode, warn)
        # fused Adam on the GPU: one kernel instead of a few per parameter group (the fusion model is small, so
        # kernel launches, not FLOPs, set the step time); on the CPU the default, bit-reproducible path.
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay,
                                          fused=True if device.type == "cuda" else None)
        self.scheduler = cosine_schedule(self.optimizer, epochs, warmup_epochs, warmup_lr, min_lr)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def start_epoch(self, epoch: int) -> float:
        """Set the rate of 0-based epoch `epoch` (the schedule's step epoch + 1) and return it."""
        self.scheduler.step(epoch + 1)
        return float(self.optimizer.param_groups[0]["lr"])

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on one batch (already on the device); returns the detached loss, without waiting for it."""
        if self.compile_mode == "cudagraphs":  # a new step: the graphs' outputs of the last one may be reused
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.amp):
            logits = self.forward(x)
        loss = attribute_loss(logits.float(), y, self.pos_rate)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of a run; the process's previous setting is restored after."""
    before, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn)
