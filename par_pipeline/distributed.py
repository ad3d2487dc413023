"""torch.distributed glue: a run under torchrun knows its rank; a plain run is a world of one."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> "DistContext":
        return cls()

    @classmethod
    def from_env(cls, backend: str | None = None) -> "DistContext":
        """Join the process group when launched by torchrun (WORLD_SIZE > 1), else a world of one."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not tdist.is_initialized():
            backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
            tdist.init_process_group(backend=backend)
        return cls(rank=tdist.get_rank(), world_size=tdist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def device(self, requested: str) -> str:
        """Each rank takes its own GPU when the request is plain 'cuda'."""
        if requested == "cuda" and self.enabled:
            return f"cuda:{self.local_rank}"
        return requested

    def shutdown(self) -> None:
        if self.enabled and tdist.is_initialized():
            tdist.barrier()  # no rank tears gloo down while another is still in a collective (abort at exit)
            tdist.destroy_process_group()
