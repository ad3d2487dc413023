"""What the `par` process imports, and what it does not: timm imports wandb whenever wandb is installed
(`timm.utils.summary`, for timm's own training scripts), which costs about half a second of CPU at every `par`
start here (a process's imports take ~5 s on this VM) and wraps sys.stdout from then on. par uses wandb only for
`--log-to wandb`, and imports it itself then.

So par's own first import of timm (before the fusion model's blocks, the scheduler, or open_clip, which imports
timm) runs with `wandb` answered as not installed, and only then: timm expects that and carries on, and every later
`import wandb` (par's W&B tracker, the user's code) gets wandb as usual."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from typing import Any, Iterator


class _NoWandb:
    """A meta-path finder that answers `import wandb` as if wandb were not installed."""

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "wandb" or name.startswith("wandb."):
            raise ModuleNotFoundError("No module named 'wandb' (not imported for timm in a par process)", name="wandb")
        return None


@contextlib.contextmanager
def _without_wandb() -> Iterator[None]:
    sys.meta_path.insert(0, _NoWandb)
    try:
        yield
    finally:
        sys.meta_path.remove(_NoWandb)


def import_timm() -> None:
    """timm and its utilities (where it looks for wandb), imported once with wandb answered as missing; nothing when
    timm or wandb is already imported (then timm has already looked, or wandb costs nothing more)."""
    if "timm" in sys.modules or "wandb" in sys.modules:
        return
    with _without_wandb():
        import timm  # noqa: F401
        import timm.utils  # noqa: F401


def timm_module(name: str) -> Any:
    """A timm module, timm imported first as `import_timm` does."""
    import_timm()
    return importlib.import_module(name)


def is_installed(module: str) -> bool:
    """Whether an optional package (a runtime of par_pipeline/deploy) can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None
