import json
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY, extract_config, run_par, tiny_extract
from par_pipeline.data.manifest import read_manifest
from par_pipeline.errors import ParError
from par_pipeline.store.reader import TokenStore


def test_store_layout(store_path, manifest_path):
    m = read_manifest(manifest_path)
    s = TokenStore(store_path)
    F = sum(len(r.frames) for r in m.records)
    assert s.tokens.shape == (F, 197, 512) and s.tokens.dtype == np.float16
    assert s.tokens.chunks == (1, 197, 512) and s.tokens.shards == (16, 197, 512)
    assert s.offsets[0] == 0 and s.offsets[-1] == F and len(s.offsets) == len(m.records) + 1
    assert (s.views == 1).all() and s.tracklets == [r.tracklet for r in m.records]
    assert s.split == [r.split for r in m.records] and s.person_ids.tolist() == [r.person_id for r in m.records]
    assert (s.labels == np.array([r.labels for r in m.records])).all()
    for source in ("words", "prompts", "phrases"):
        assert s.text_features(source).shape == (43, 512) and s.text_features(source).dtype == np.float32
    assert s.frame_ok.all()
    a = s.attrs
    assert a["format"] == "par-token-store" and a["version"] == 2 and a["complete"] is True
    assert a["recipe"]["name"] == "vtf-par-official" and a["recipe"]["overrides"]["clip_model"] == "par-tiny-clip"
    assert a["clip_model"] == "par-tiny-clip" and a["weights"] == {"kind": "random-init", "seed": 0}
    assert a["precision"] == "fp32" and a["schema"] == "mars" and len(a["attributes"]) == 43
    assert a["texts"]["words"][0] == "top short" and a["texts"]["prompts"][0].startswith("the pedestrian has")
    assert a["preprocessing"] == {"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3, "pad": "zero-square",
                                  "interpolation": "bilinear", "decoder": "pil"}
    assert a["views"]["count"] == 1 and a["schema_definition"]["name"] == "mars"
    assert not os.path.exists(str(store_path) + ".partial")


def reference_tokens(model, x):
    """The reference's VisionTransformer.forward (CLIP/clip/model.py), written out: every token after ln_post,
    @ proj."""
    v = model.visual
    h = v.conv1(x).flatten(2).permute(0, 2, 1)
    h = torch.cat([v.class_embedding.expand(len(h), 1, -1), h], dim=1) + v.positional_embedding
    h = v.transformer(v.ln_pre(h))
    return v.ln_post(h) @ v.proj


def test_tokens_are_the_references_clip_tokens(store_path, manifest_path):
    from par_pipeline.data.preprocess import load_frame, normalize
    from par_pipeline.model.clip import ClipEncoder
    from par_pipeline.workflows.extract import preprocess_of

    m = read_manifest(manifest_path)
    cfg, _ = extract_config(store_path)
    enc = ClipEncoder("par-tiny-clip", None, True, "cpu", "fp32", preprocess_of(cfg))
    img = torch.from_numpy(load_frame(m.resolve(m.records[3].frames[1]), enc.preprocess)[0])[None]
    with torch.no_grad():
        expected = reference_tokens(enc.model, normalize(img, enc.preprocess))[0].numpy()
        cls = enc.model.visual(normalize(img, enc.preprocess))[0].numpy()
    s = TokenStore(store_path)
    stored = s.read_rows(np.array([s.row(3, 1)]))[0][0].astype(np.float32)
    assert np.allclose(stored, expected, atol=2e-3 * np.abs(expected).max())
    assert np.allclose(cls, expected[0], atol=1e-5)  # the CLS token is open_clip's image feature
    # the tiny config, like OpenAI's ViT-B/16, uses QuickGELU
    assert type(enc.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_h5_matches_zarr(store_path, h5_store):
    a, b = TokenStore(store_path), TokenStore(h5_store)
    rows = np.arange(a.tokens.shape[0])
    assert np.array_equal(a.read_rows(rows)[0], b.read_rows(rows)[0]) and a.tracklets == b.tracklets
    assert {k: v for k, v in a.attrs.items()} == b.attrs
    assert not h5_store.with_name("tokens.h5.partial").exists()


def test_no_weights_is_an_error(manifest_path, tmp_path):
    proc = run_par("extract", manifest_path, "--out", tmp_path / "s.zarr", "--clip-model", "par-tiny-clip", check=False)
    assert proc.returncode == 2 and "no CLIP weights given" in proc.stderr and "--pretrained" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_finished_store_not_recomputed_and_other_identity_refused(store_path, manifest_path):
    shard = store_path / "tokens" / "c" / "0" / "0" / "0"
    before = os.path.getmtime(shard)
    res = tiny_extract(read_manifest(manifest_path), store_path)
    assert res.already_complete and res.encoded_rows == 0 and os.path.getmtime(shard) == before
    with pytest.raises(ParError, match="different weights"):
        tiny_extract(read_manifest(manifest_path), store_path, weights_seed=1)
    with pytest.raises(ParError, match="different texts"):
        tiny_extract(read_manifest(manifest_path), store_path, prompt_template="{phrase}")
    with pytest.raises(ParError, match="different views"):
        tiny_extract(read_manifest(manifest_path), store_path, views=2)


def _break_frame(synth_root, tmp_path, how):
    root = tmp_path / "mars"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "bbox_train").rglob("*.jpg"))[5]
    if how == "truncated":
        victim.write_bytes(victim.read_bytes()[:300])
    elif how == "empty":
        victim.write_bytes(b"")
    return root, victim


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_bad_frame_error_and_skip(synth_root, tmp_path, how):
    from par_pipeline.data.layouts import build_mars_manifest
    from par_pipeline.data.manifest import write_manifest
    from par_pipeline.data.schema import load_schema

    root, victim = _break_frame(synth_root, tmp_path, how)
    write_manifest(build_mars_manifest(root, load_schema("mars"))[0], tmp_path / "m.jsonl")
    proc = run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.zarr", *TINY, check=False)
    assert proc.returncode == 2 and str(victim) in proc.stderr and "--on-bad-frame skip" in proc.stderr
    assert not (tmp_path / "s.zarr").exists()
    run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.zarr", *TINY, "--on-bad-frame", "skip")
    s = TokenStore(tmp_path / "s.zarr")  # the same command with skip resumed the interrupted store
    assert s.attrs["skipped_frames"] == [str(victim)] and (~s.frame_ok).sum() == 1
    run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "v.zarr", *TINY, "--on-bad-frame", "skip",
            "--views", "2")
    assert (~TokenStore(tmp_path / "v.zarr").frame_ok).sum() == 2  # both views of the bad training frame
    run_par("verify", tmp_path / "v.zarr")


def test_missing_frame_named(manifest_path, tmp_path):
    m = read_manifest(manifest_path)
    m.records[2].frames[0] = "bbox_train/9999/nothere.jpg"
    with pytest.raises(ParError, match=r"nothere.jpg: file not found"):
        tiny_extract(m, tmp_path / "s.zarr")


def test_odd_images_just_work(tmp_path):
    from PIL import Image

    from par_pipeline.data.preprocess import Preprocess, load_frame

    pp = Preprocess()
    for mode, size in (("L", (50, 300)), ("RGBA", (128, 256)), ("RGB", (640, 480))):
        name = tmp_path / f"x.{'png' if mode == 'RGBA' else 'jpg'}"
        Image.new(mode, size).save(name)
        img, reason = load_frame(name, pp)
        assert reason == "" and img.shape == (3, 224, 224) and img.dtype == np.uint8


def test_preprocessing_is_the_references(tmp_path):
    """Pad to a square with zeros, bilinear resize to 224 (torchvision's Resize on a PIL image), mean = std = 0.5."""
    from PIL import Image
    from torchvision import transforms as T

    from par_pipeline.data.preprocess import Preprocess, normalize, pad_to_square, prepare_image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (256, 128, 3), dtype=np.uint8))
    padded = pad_to_square(img)
    reference = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])(padded)
    ours = normalize(torch.from_numpy(prepare_image(img, Preprocess()))[None], Preprocess())[0]
    assert torch.allclose(ours, reference, atol=1e-6)
    assert np.asarray(padded)[:, :64].max() == 0 and np.asarray(padded)[:, -64:].max() == 0  # centred on black


def test_torchvision_decoder_matches_pil(synth_root):
    """The device decode path (torchvision decode + torch resize; nvJPEG on a GPU) gives the PIL path's frames within
    a few grey levels (different JPEG IDCT and resize implementations). On a GPU the same code runs on CUDA."""
    from par_pipeline.data.frames import FrameRows, collate_rows, decode_rows
    from par_pipeline.data.preprocess import Preprocess, View, apply_view

    paths = [str(p) for p in sorted(synth_root.rglob("*.jpg"))[:6]]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    pil = FrameRows(paths, Preprocess())
    ref = torch.stack([pil[i][1] for i in range(len(paths))]).int()
    for device in devices:
        tv = FrameRows(paths, Preprocess(decoder="torchvision"))
        rows, payload, ok, reasons = collate_rows([tv[i] for i in range(len(paths))])
        images, ok, _ = decode_rows(tv, rows, payload, ok, reasons, torch.device(device))
        diff = (images.cpu().int() - ref).abs()
        assert ok.all() and diff.float().mean() < 1.0 and diff.max() <= 12, (device, diff.float().mean(), diff.max())
        # stored views on the device path: each row's view of the same decoded frame (plain rows copied together)
        view = np.array([0, 1, 2, 0, 2, 1])
        tracklet, position = np.zeros(len(paths), np.int64), np.arange(len(paths))
        tv_views = FrameRows(paths, Preprocess(decoder="torchvision"), view, tracklet, position, 0, 10)
        with_views, _, _ = decode_rows(tv_views, rows, payload, ok, reasons, torch.device(device))
        for i in range(len(paths)):
            assert torch.equal(with_views[i], apply_view(images[i], tv_views.view(i)))
        assert tv_views.view(2) != View() and torch.equal(with_views[3], images[3])


def test_views_are_the_references_augmentation_and_recorded(manifest_path, views_store, tmp_path):
    """View 0 = the frame, view 1 = its flip, views 2.. = Pad(10) + crop back to 224 (+ a flip with p 1/2), drawn from
    the recorded seed; only training frames get extra views; the same command gives the same bytes."""
    from par_pipeline.data.preprocess import View, apply_view, view_of

    img = torch.arange(3 * 224 * 224, dtype=torch.int32).reshape(3, 224, 224).to(torch.uint8)
    assert torch.equal(apply_view(img, View(flip=True)), img.flip(-1))
    crop = view_of(2, seed=0, tracklet=3, frame=1, pad=10)
    padded = torch.nn.functional.pad(img, (10, 10, 10, 10))
    top, left = crop.crop
    expected = padded[:, top:top + 224, left:left + 224]
    assert torch.equal(apply_view(img, crop), expected.flip(-1) if crop.flip else expected)
    assert 0 <= top <= 20 and 0 <= left <= 20 and view_of(2, 0, 3, 1, 10) == crop
    m = read_manifest(manifest_path)
    s = TokenStore(views_store)
    n_train = sum(len(r.frames) for r in m.split("train"))
    assert s.tokens.shape[0] == 3 * n_train + sum(len(r.frames) for r in m.split("test"))
    assert [int(v) for v in s.views] == [3 if r.split == "train" else 1 for r in m.records]
    assert s.attrs["views"] == {"count": 3, "seed": 0, "pad": 10, "splits": ["train"]}
    i = next(k for k, r in enumerate(m.records) if r.split == "train")
    a, b = s.read_rows(np.array([s.row(i, 0, 0), s.row(i, 0, 1)]))[0]
    assert not np.array_equal(a, b)  # the flip gives other tokens
    tiny_extract(m, tmp_path / "v2.zarr", views=3, writers=3)  # shards written by three threads, in any order
    rows = np.arange(s.tokens.shape[0])
    assert np.array_equal(s.read_rows(rows)[0], TokenStore(tmp_path / "v2.zarr").read_rows(rows)[0])
    for name in ("tokens", "frame_ok", "done"):
        files = {f.relative_to(views_store): f.read_bytes() for f in (views_store / name).rglob("*") if f.is_file()}
        again = {f.relative_to(tmp_path / "v2.zarr"): f.read_bytes() for f in (tmp_path / "v2.zarr" / name).rglob("*")
                 if f.is_file()}
        assert files == again and len(files) > 2, name


def test_int8_store(int8_store, store_path):
    """int8 tokens with per-token scales: about half the bytes of float16, cosine to the float tokens >= 0.999."""
    from par_pipeline.store.codec import TokenCodec

    q, f = TokenStore(int8_store), TokenStore(store_path)
    rows = np.arange(q.tokens.shape[0])
    tq, sq = q.read_rows(rows)
    decoded = TokenCodec("int8").decode(torch.from_numpy(tq), torch.from_numpy(sq))
    ref = torch.from_numpy(f.read_rows(rows)[0]).float()
    cos = torch.nn.functional.cosine_similarity(decoded.flatten(0, 1), ref.flatten(0, 1), dim=-1)
    assert cos.min() >= 0.999 and tq.dtype == np.int8

    def size(path):
        return sum(x.stat().st_size for x in path.rglob("*") if x.is_file())
    ratio = (size(int8_store / "tokens") + size(int8_store / "token_scales")) / size(store_path / "tokens")
    assert ratio <= 0.51
    run_par("verify", int8_store)


def test_converted_int8_store_equals_extracted_int8(int8_store, store_path, tmp_path):
    """`convert_store` (the bench's int8 copy of a float16 store) writes what extraction writes, but for the rounding
    of float32 tokens to float16 first."""
    from par_pipeline.store.writer import convert_store

    convert_store(TokenStore(store_path), tmp_path / "c.zarr", "int8")
    c, q = TokenStore(tmp_path / "c.zarr"), TokenStore(int8_store)
    rows = np.arange(q.tokens.shape[0])
    (tc, sc), (tq, sq) = c.read_rows(rows), q.read_rows(rows)
    assert {k: v for k, v in c.attrs.items() if k != "recipe"} == {k: v for k, v in q.attrs.items() if k != "recipe"}
    assert np.abs(tc.astype(np.int16) - tq).max() <= 1 and np.allclose(sc, sq, rtol=2e-3)
    run_par("verify", tmp_path / "c.zarr")


def test_second_writer_refused_and_damaged_partial_reported(manifest_path, store_path, tmp_path):
    """A second `par extract` on the same --out while one runs is refused at once; a .partial whose arrays are gone
    is reported with what to do, not a KeyError."""
    import fcntl

    out = tmp_path / "s.zarr"
    partial = tmp_path / "s.zarr.partial"
    partial.mkdir()
    fd = os.open(partial, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running extraction holds it
    try:
        proc = run_par("extract", manifest_path, "--out", out, *TINY, check=False)
        assert proc.returncode == 2 and "another par extract is writing here" in proc.stderr
    finally:
        os.close(fd)
    shutil.copytree(store_path, tmp_path / "d.zarr.partial")
    attrs = json.loads((tmp_path / "d.zarr.partial" / "zarr.json").read_text())
    attrs["attributes"]["complete"] = False
    (tmp_path / "d.zarr.partial" / "zarr.json").write_text(json.dumps(attrs))
    shutil.rmtree(tmp_path / "d.zarr.partial" / "done")
    proc = run_par("extract", manifest_path, "--out", tmp_path / "d.zarr", *TINY, check=False)
    assert proc.returncode == 2 and "cannot be resumed" in proc.stderr and "remove it and run again" in proc.stderr


def test_direct_shard_reads_match_zarr(store_path):
    from par_pipeline.store.shard_files import ShardFileReader

    s = TokenStore(store_path)
    assert s.reads_shard_files  # our layout is recognised
    rows = np.array([0, 5, 5, 17, int(s.tokens.shape[0]) - 1, 3])
    expected = np.stack([np.asarray(s.tokens[int(r)]) for r in rows])
    assert np.array_equal(s.read_rows(rows)[0], expected)
    import zarr

    other = zarr.open_array(
        str(store_path.parent / "other.zarr"), mode="w", shape=(4, 3), chunks=(2, 3), dtype="float16"
    )
    assert ShardFileReader.for_array(store_path.parent / "other.zarr") is None and other.shape == (4, 3)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_direct_shard_writes_equal_zarr_bytes(tmp_path, dtype):
    """The writer's shard files are byte for byte what zarr-python writes (crc32c per chunk and for the index): full
    and partial last shard, and a row left out (a skipped frame) exactly as zarr leaves out a chunk of fill values."""
    import zarr
    from zarr.codecs import Crc32cCodec

    from par_pipeline.store.shard_files import ShardFileReader, ShardFileWriter

    F, N, D, S = 13, 5, 8, 8
    data = ((np.random.default_rng(0).random((F, N, D)) + 0.5) * (100 if dtype == "int8" else 1)).astype(dtype)
    present = np.ones(F, np.uint8)
    present[2] = 0
    data[2] = 0
    paths = {}
    for name in ("by-zarr", "direct"):
        g = zarr.open_group(str(tmp_path / name), mode="w", zarr_format=3)
        arr = g.create_array("tokens", shape=(F, N, D), chunks=(1, N, D), shards=(S, N, D), dtype=dtype,
                             compressors=[Crc32cCodec()], fill_value=0)
        paths[name] = tmp_path / name / "tokens"
        if name == "by-zarr":
            arr[:S] = data[:S]
            arr[S:] = data[S:]
        else:
            w = ShardFileWriter.for_array(paths[name])
            assert w is not None
            w.write(0, np.ascontiguousarray(data[:S]), present[:S])
            w.write(1, np.ascontiguousarray(data[S:]), present[S:])
    for s in (0, 1):
        a = (paths["by-zarr"] / "c" / str(s) / "0" / "0").read_bytes()
        b = (paths["direct"] / "c" / str(s) / "0" / "0").read_bytes()
        assert a == b, f"shard {s} differs"
    assert np.array_equal(zarr.open_array(str(paths["direct"]))[:], data)
    rows = np.array([r for r in range(F)[::-1] if present[r]])
    assert np.array_equal(ShardFileReader.for_array(paths["direct"]).read(rows), data[rows])


def test_direct_flag_writes_equal_zarr_bytes(tmp_path):
    """The per-shard flags (`frame_ok`: a chunk per shard with its crc32c; `done`: a zstd chunk per shard) written
    directly are byte for byte zarr-python's: a partial last chunk, a chunk of fill values only (not stored, and an
    earlier one removed), and what zarr reads back; another codec chain is left to zarr-python."""
    import zarr

    from par_pipeline.store.codec import TokenCodec
    from par_pipeline.store.shard_files import FlagChunkWriter
    from par_pipeline.store.writer import StorePlan, create_zarr

    S, F = 8, 21
    plan = StorePlan.one_tracklet(F, num_tokens=2, dim=4)
    ok = [np.array([1, 0, 1, 1, 1, 1, 0, 1], np.uint8), np.ones(8, np.uint8), np.zeros(5, np.uint8)]
    stores = {}
    for name in ("by-zarr", "direct"):
        g = create_zarr(str(tmp_path / name), plan, {}, {}, TokenCodec("float16"), S)
        stores[name] = tmp_path / name
        flags = {a: FlagChunkWriter.for_array(stores[name] / a) for a in ("frame_ok", "done")}
        for s, values in enumerate(ok):
            if name == "by-zarr":
                g["frame_ok"][s * S:s * S + len(values)] = np.ones(len(values), np.uint8)  # then rewritten
                g["frame_ok"][s * S:s * S + len(values)] = values
                g["done"][s] = 1
            else:
                flags["frame_ok"].write(s, np.ones(len(values), np.uint8))
                flags["frame_ok"].write(s, values)
                flags["done"].write(s, np.ones(1, np.uint8))
    for a in ("frame_ok", "done"):
        files = [{f.relative_to(stores[n]): f.read_bytes() for f in (stores[n] / a / "c").iterdir()} for n in stores]
        assert files[0] == files[1], a
    assert len(list((stores["direct"] / "frame_ok" / "c").iterdir())) == 2  # the all-zero chunk is not stored
    direct = zarr.open_group(str(stores["direct"]), mode="r")
    assert np.array_equal(direct["frame_ok"][:], np.concatenate(ok)) and direct["done"][:].tolist() == [1, 1, 1]
    zarr.open_group(str(tmp_path / "other"), mode="w").create_array("a", shape=(4,), chunks=(2,), dtype="uint8",
                                                                    compressors=None)
    assert FlagChunkWriter.for_array(tmp_path / "other" / "a") is None


def test_a_flag_layout_of_another_codec_is_written_through_zarr(manifest_path, store_path, tmp_path, monkeypatch):
    """`done` made with another codec chain (what a newer zarr's default could give): the direct flag writer steps
    aside for zarr-python instead of refusing, and the store ends complete with the same tokens."""
    import zarr.codecs

    real = zarr.codecs.ZstdCodec
    monkeypatch.setattr(zarr.codecs, "ZstdCodec", lambda level, checksum: real(level=3, checksum=True))
    run_par("extract", manifest_path, "--out", tmp_path / "s.zarr", *TINY)
    meta = json.loads((tmp_path / "s.zarr" / "done" / "zarr.json").read_text())
    assert meta["codecs"][1]["configuration"] == {"level": 3, "checksum": True}  # not the layout it writes itself
    ours, theirs = TokenStore(tmp_path / "s.zarr"), TokenStore(store_path)
    rows = np.arange(ours.tokens.shape[0])
    assert ours.attrs["complete"] and np.array_equal(ours.read_rows(rows)[0], theirs.read_rows(rows)[0])
    run_par("verify", tmp_path / "s.zarr")


def test_write_failure_is_one_line_and_resumable(store_path, manifest_path, tmp_path, monkeypatch):
    import errno

    from par_pipeline.store.shard_files import ShardFileWriter

    real_write, calls = ShardFileWriter.write, []

    def failing(self, s, frames, present):
        calls.append(s)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, s, frames, present)

    monkeypatch.setattr(ShardFileWriter, "write", failing)
    out = tmp_path / "full.zarr"
    with pytest.raises(ParError, match=r"c/\d+/0/0: cannot write \(No space left on device\).*re-run the same command"):
        tiny_extract(read_manifest(manifest_path), out)
    assert not out.exists() and (tmp_path / "full.zarr.partial").exists()
    monkeypatch.setattr(ShardFileWriter, "write", real_write)
    res = tiny_extract(read_manifest(manifest_path), out)
    assert res.resumed_shards >= 1
    a, b = TokenStore(out), TokenStore(store_path)
    rows = np.arange(a.tokens.shape[0])
    assert np.array_equal(a.read_rows(rows)[0], b.read_rows(rows)[0]) and a.attrs == b.attrs


def test_non_finite_tokens_are_refused(manifest_path, tmp_path, monkeypatch):
    """CLIP giving NaN (fp16 overflow) ends in an error naming the frame; nothing of that shard is stored."""
    from par_pipeline.model.clip import ClipEncoder

    real = ClipEncoder.encode_frames

    def nan_frames(self, images, precision=None):
        out = real(self, images, precision)
        out[1, 3, 7] = float("nan")
        return out

    monkeypatch.setattr(ClipEncoder, "encode_frames", nan_frames)
    with pytest.raises(ParError, match=r"\.jpg \(view 0\): CLIP gave non-finite tokens"):
        tiny_extract(read_manifest(manifest_path), tmp_path / "n.zarr")
    assert not (tmp_path / "n.zarr").exists()
