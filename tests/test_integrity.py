"""Corruption is an error, never a number: damaged stores and checkpoints are caught where they are read and by
`par verify`, which names the first bad shard, row or file."""
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import TRAIN, digest, one_error_line, run_par, tiny_train
from par_pipeline.errors import ParError
from par_pipeline.store.reader import TokenStore


def _copy(store_path, tmp_path):
    out = tmp_path / "s.zarr"
    shutil.copytree(store_path, out)
    return out


SHARD = ("tokens", "c", "0", "0", "0")


def _layout(store):
    """(rows per shard, bytes of a row's chunk with its crc32c) as the store records them."""
    s = TokenStore(store)
    return int(s.attrs["shard_frames"]), s.codec.bytes_per_frame(s.num_tokens, s.dim) + 4


def flip_token_byte(store):
    """A byte of the first frame of the first test tracklet (evaluation always reads it)."""
    s = TokenStore(store)
    rows_per_shard, chunk = _layout(store)
    row = int(s.offsets[s.indices("test")[0]])
    p = store / "tokens" / "c" / str(row // rows_per_shard) / "0" / "0"
    data = bytearray(p.read_bytes())
    data[(row % rows_per_shard) * chunk + 5000] ^= 0x10
    p.write_bytes(bytes(data))


def flip_index_entry(store):
    p = store.joinpath(*SHARD)
    data = bytearray(p.read_bytes())
    rows_per_shard, _ = _layout(store)
    data[-4 - 16 * rows_per_shard + 3] ^= 1  # the first index entry's offset (16 bytes a row, then the crc)
    p.write_bytes(bytes(data))


def delete_shard(store):
    store.joinpath(*SHARD).unlink()


def truncate_shard(store):
    p = store.joinpath(*SHARD)
    p.write_bytes(p.read_bytes()[:30000])


def nan_tokens(store):
    """NaN written with a valid checksum (as a buggy writer would): only the finite check can catch it."""
    from par_pipeline.store.shard_files import ShardFileWriter

    s = TokenStore(store)
    rows = np.arange(_layout(store)[0])
    tokens, _ = s.read_rows(rows)
    tokens[3, 10, 20] = np.nan
    ShardFileWriter.for_array(store / "tokens").write(0, tokens, s.frame_ok[rows].astype(np.uint8))


@pytest.mark.parametrize("damage,message", [
    (flip_token_byte, r"tokens/c/\d+/0/0: row \d+ fails its checksum"),
    (flip_index_entry, r"c/0/0/0: shard index is damaged"),
    (delete_shard, r"c/0/0/0: row 0 has no data"),
    (truncate_shard, r"c/0/0/0: shard index is damaged"),
])
def test_damaged_store_stops_training_and_verify(store_path, tmp_path, damage, message):
    store = _copy(store_path, tmp_path)
    damage(store)
    line = one_error_line(run_par("train", store, "--out", tmp_path / "run", *TRAIN, check=False))
    assert re.search(message, line), line
    assert not (tmp_path / "run").exists()
    assert re.search(message, one_error_line(run_par("verify", store, check=False)))


def test_nan_tokens_are_found(store_path, tmp_path):
    store = _copy(store_path, tmp_path)
    nan_tokens(store)
    proc = run_par("verify", store, check=False)
    assert proc.returncode == 2 and "row 3 (tracklet" in proc.stderr and "non-finite tokens" in proc.stderr


@pytest.mark.parametrize("damage,message", [
    (lambda s: (s / "zarr.json").write_text("{garbage"), "damaged store metadata"),
    (lambda s: shutil.rmtree(s / "offsets"), r"store lacks array\(s\) \['offsets'\]"),
    (lambda s: (s / "labels" / "c" / "0" / "0").write_bytes(b"\x00" * 10), "store arrays are damaged"),
])
def test_damaged_metadata(store_path, run_path, tmp_path, damage, message):
    store = _copy(store_path, tmp_path)
    damage(store)
    with pytest.raises(ParError, match=message):
        TokenStore(store)
    line = one_error_line(run_par("eval", store, "--checkpoint", run_path, "--out", tmp_path / "ev", check=False))
    assert re.search(message, line) and str(store) in line, line
    assert not (tmp_path / "ev").exists()


def test_verify_reports_a_good_store_and_run(store_path, run_path):
    out = run_par("verify", store_path).stdout
    assert "all checks passed" in out and "row checksums" in out
    out = run_par("verify", run_path).stdout
    assert "all checks passed" in out and "best.json" in out


def test_flipped_checkpoint_byte_is_an_error(run_path, store_path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_path, run)
    w = run / "best.safetensors"
    data = bytearray(w.read_bytes())
    data[-100] ^= 1
    w.write_bytes(bytes(data))
    for cmd in (["eval", store_path, "--checkpoint", run], ["verify", run]):
        proc = run_par(*cmd, check=False)
        assert proc.returncode == 2 and "does not match the sha256 its checkpoint records" in proc.stderr
    assert not (run / "eval-test").exists()


def test_tracklet_without_frames_is_named(store_path, tmp_path):
    """A test tracklet whose frames were all skipped at extraction cannot be evaluated silently."""
    import zarr

    store = _copy(store_path, tmp_path)
    s = TokenStore(store)
    i = int(s.indices("test")[0])
    ok = np.asarray(zarr.open_array(str(store / "frame_ok"))[:])
    ok[s.offsets[i]:s.offsets[i + 1]] = 0
    zarr.open_array(str(store / "frame_ok"), mode="r+")[:] = ok
    before = digest(store)
    with pytest.raises(ParError, match=rf"tracklet\(s\) have no readable frames \(e.g. {s.tracklets[i]}"):
        tiny_train(store, tmp_path / "run")
    assert digest(store) == before and not (tmp_path / "run").exists()  # nothing read is changed, nothing written


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_finite_rows_flags_exactly_the_rows_with_nan_or_inf(dtype):
    """The row-sum finiteness check: a NaN, +Inf, -Inf or +Inf beside -Inf is caught; rows of the largest finite
    values (whose sum would overflow a same-width accumulator) are not flagged."""
    from par_pipeline.store.codec import finite_rows

    big = torch.finfo(dtype).max
    x = torch.randn(7, 5, 9).to(dtype)
    x[1, 2, 3] = float("nan")
    x[2, 0, 0] = float("inf")
    x[3, 4, 8] = float("-inf")
    x[4, 0, 0], x[4, 1, 1] = float("inf"), float("-inf")
    x[5] = big
    x[6] = -big
    assert finite_rows(x).tolist() == [True, False, False, False, False, True, True]
