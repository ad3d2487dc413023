"""The cameras of a live run: each source's name (its output folder) and which of them a torchrun rank follows."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ParError, masked


def source_names(sources: list[str]) -> list[tuple[str, str]]:
    """(name, source) of each: `NAME=SOURCE` names it; otherwise a file's stem, a URL's last path part or host (of
    the URL as masked: a stream key or token never names a folder)."""
    named = []
    for s in sources:
        head, sep, rest = s.partition("=")
        if sep and "://" not in head and "/" not in head:
            named.append((head, rest))
            continue
        if "://" in s:
            path = masked(s).split("://", 1)[1].split("?")[0].split("#")[0]
            host, _, tail = path.rpartition("@")[2].partition("/")
            parts = [p for p in tail.split("/") if p and p != "***"]
            name = Path(parts[-1]).stem if parts else host.split(":")[0]
        else:
            name = Path(s).stem
        named.append((name or "camera", s))
    names = [n for n, _ in named]
    if len(set(names)) != len(names):
        raise ParError(f"two sources share the name {sorted(n for n in names if names.count(n) > 1)[0]!r}; each "
                       f"writes OUT/<name>/ - name them NAME=SOURCE")
    return named


def for_this_rank(named: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Under torchrun, rank r of W follows sources r, r + W, ... (each camera once across the machines)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    return named[rank::world]
