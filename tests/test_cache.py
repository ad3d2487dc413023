"""`--cache`: tokens held in memory give the run that reading the store gives, bit for bit on a CPU (float16,
int8 with its scales, several views, a held-out validation part); `auto` says what it chose and why; a row that fails
its checksum is an error while loading, never a number."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import SMALL_TRAIN, TRAIN, one_error_line, run_par, tiny_train, train_config
from par_pipeline.engine.resident import MEMORY_MARGIN, choose_cache
from par_pipeline.errors import ParError


def epochs(run) -> list[dict]:
    """log.jsonl without samples_per_s (a measurement; the rest is the run)."""
    return [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"}
            for line in (run / "log.jsonl").read_text().splitlines()]


def same_run(a, b) -> None:
    for name in ("best.safetensors", "last.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert epochs(a) == epochs(b)


@pytest.mark.parametrize("which", ["store_path", "int8_store", "views_store"])
def test_ram_gives_the_disk_run_bit_for_bit(which, request, tmp_path):
    store = request.getfixturevalue(which)
    extra = {"val_fraction": 0.25} if which == "store_path" else {}
    tiny_train(store, tmp_path / "disk", **extra)
    from par_pipeline.workflows.train import train

    said = []

    cfg, recipe = train_config(store, tmp_path / "ram", cache="ram", **extra)
    train(cfg, recipe, loading=lambda what, done, total: said.append((what, done, total)))
    assert said[0][0].startswith("cache ram: asked for (") and said[-1][1] == said[-1][2] > 0
    same_run(tmp_path / "disk", tmp_path / "ram")


def test_auto_chooses_by_free_memory_with_the_margin():
    gb = 10**9
    fits = int((1 - MEMORY_MARGIN) * 100 * gb)
    assert choose_cache("auto", fits, 10 * gb, 100 * gb) == \
        ("device", f"auto: {fits / gb:.2f} GB of rows, 100.00 GB free on the GPU, a 20% margin kept")
    assert choose_cache("auto", fits + 1, 200 * gb, 100 * gb)[0] == "ram"
    assert choose_cache("auto", fits, 100 * gb, None)[0] == "ram"  # a CPU run
    assert choose_cache("auto", fits + 1, 100 * gb, None) == \
        ("disk", "auto: 80.00 GB of rows, 100.00 GB of host memory available do not fit with a 20% margin")
    assert choose_cache("disk", 1, 0, None) == ("disk", "asked for")
    with pytest.raises(ParError, match="--cache device needs 2.00 GB of rows, 1.00 GB free on the GPU; use --cache"):
        choose_cache("device", 2 * gb, 100 * gb, gb)


def test_cli_says_the_choice_and_a_corrupt_row_is_an_error_while_loading(store_path, tmp_path):
    result = run_par("train", store_path, "--out", tmp_path / "run", *TRAIN, "--cache", "auto")
    assert "cache ram: auto: " in result.stdout and (tmp_path / "run" / "best.json").is_file()
    broken = tmp_path / "broken.zarr"
    shutil.copytree(store_path, broken)
    shard = sorted(p for p in (broken / "tokens" / "c").rglob("*") if p.is_file())[0]  # a shard of the tokens
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    line = one_error_line(run_par("train", broken, "--out", tmp_path / "r2", *TRAIN, "--cache", "ram", check=False))
    assert "checksum" in line and str(broken) in line
    assert not (tmp_path / "r2").exists()


def test_a_sweep_holds_its_rows_once_and_gives_the_disk_sweep(store_path, tmp_path):
    """par ablation --cache ram: one load for every point (the union of their rows), each point's checkpoint the one
    its disk sweep gives."""
    from par_pipeline.workflows.ablation import run_ablation

    base = {**SMALL_TRAIN, "epochs": 1}
    run_ablation(str(store_path), tmp_path / "disk", [1, 3], ["fusion"], 1, None, base)
    said = []
    run_ablation(str(store_path), tmp_path / "ram", [1, 3], ["fusion"], 1, None, {**base, "cache": "ram"},
                 loading=lambda what, done, total: said.append(what))
    assert len(set(said)) == 1 and said[0].startswith("cache ram: asked for") and "loaded once for the sweep" in said[0]
    points = sorted(p.name for p in (tmp_path / "disk" / "runs").iterdir())
    assert len(points) == 2 and points == sorted(p.name for p in (tmp_path / "ram" / "runs").iterdir())
    for name in points:
        same_run(tmp_path / "disk" / "runs" / name, tmp_path / "ram" / "runs" / name)
