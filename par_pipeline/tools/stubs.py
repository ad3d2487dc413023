"""Stand-ins the benches time the machinery around: frames without decoding (the extraction host loop, the grid's
store built through the extraction sink)."""
from __future__ import annotations

import torch


class StubFrames(torch.utils.data.Dataset):
    """Stands in for JPEG decoding: every row is the same ready image (of `size`; the grid part's stub CLIP does not
    look at it, so 1)."""

    def __init__(self, rows: int, size: int):
        self.rows, self.image = rows, torch.full((3, size, size), 128, dtype=torch.uint8)

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor, bool, str]:
        return row, self.image, True, ""
