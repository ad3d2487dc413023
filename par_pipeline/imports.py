"""What the `par` process imports, and what it does not: timm imports wandb whenever wandb is installed
(`timm.utils.summary`, for timm's own training scripts), which costs about half a second of CPU at every `par`
start here (a process's imports take ~5 s on this VM) and wraps sys.stdout from then on. par uses wandb only for
`--log-to wandb`, and imports it itself then."""
from __future__ import annotations

import sys
from typing import Any


class WandbNotForTimm:
    """A meta-path finder that answers timm's `import wandb` as if wandb were not installed (timm expects that and
    carries on); every other importer, par's W&B tracker included, gets wandb as usual."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name != "wandb":
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
            frame = frame.f_back  # importlib's own frames, up to the module that asked
        if frame is not None and frame.f_globals.get("__name__", "").startswith("timm."):
            raise ModuleNotFoundError("No module named 'wandb' (not imported for timm in a par process)", name="wandb")
        return None


def keep_wandb_out_of_timm() -> None:
    """Install `WandbNotForTimm` in this process (once): the `par` command does, first thing."""
    if not any(f is WandbNotForTimm for f in sys.meta_path):
        sys.meta_path.insert(0, WandbNotForTimm)
