"""How a model's forward runs: eager, torch.compile'd (inductor), or compiled with CUDA graphs (inductor's
"reduce-overhead" mode: one graph launch a step instead of hundreds of kernel launches, which is what sets a small
model's step time on a fast GPU). One rule for CLIP in `par extract --compile` and the fusion model in `par train
--fusion-compile`: a compilation that fails falls back to eager for good, said once."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .errors import ParError

if TYPE_CHECKING:  # config.py names the modes: this module stays light to import
    import torch

COMPILE_MODES = ("eager", "compile", "cudagraphs")
_TORCH_MODE = {"compile": "default", "cudagraphs": "reduce-overhead"}


def check_compile_mode(mode: str, device: str) -> None:
    if mode not in COMPILE_MODES:
        raise ParError(f"--fusion-compile must be one of {', '.join(COMPILE_MODES)}, not '{mode}'")
    if mode == "cudagraphs" and not device.startswith("cuda"):
        raise ParError(f"--fusion-compile cudagraphs needs a CUDA device (--device {device}); use compile or eager")


def compiled_or_eager(fn: Callable[[torch.Tensor], Any], mode: str = "compile",
                      warn: Callable[[str], None] | None = None) -> Callable[[torch.Tensor], Any]:
    """`fn` (one tensor in) run as `mode` says; a compilation that fails (no C++ compiler, an unsupported op: errors
    of many types, at the first call) falls back to eager for good, told to `warn` once."""
    if mode == "eager":
        return fn
    import torch

    compiled = torch.compile(fn, mode=_TORCH_MODE[mode], dynamic=False)
    state = {"fn": compiled, "ran": False}

    def call(x: torch.Tensor) -> Any:
        try:
            out = state["fn"](x)
            state["ran"] = True
            return out
        except Exception as exc:
            # The first call compiles: any failure there means compilation does not work here. Later, only a failed
            # (re)compilation (a new shape) falls back; an error of the run itself (out of memory at step 10k, bad
            # data) is raised, never hidden by re-running eager.
            if state["fn"] is fn or (state["ran"] and not _is_compile_error(exc)):
                raise
            state["fn"] = fn
            if warn:
                first = (str(exc).splitlines() or [""])[0][:120]
                warn(f"torch.compile failed ({type(exc).__name__}: {first}); running eager")
            return fn(x)
    return call


def _is_compile_error(exc: BaseException) -> bool:
    """An error raised by torch.compile's machinery (dynamo, inductor, a backend), not by the computation."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(exc, TorchDynamoException)
