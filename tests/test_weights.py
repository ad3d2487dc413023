"""CLIP weights in every form users hold load offline, give the same tokens, and a mismatch with the architecture or
its activation is an error, never a warning."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clip_weights import tiny_clip_files
from conftest import run_par
from par_pipeline.data.manifest import read_manifest
from par_pipeline.data.preprocess import Preprocess
from par_pipeline.errors import ParError
from par_pipeline.model.clip import ClipEncoder, load_clip
from par_pipeline.store.reader import TokenStore


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    return tiny_clip_files(tmp_path_factory.mktemp("weights"))


def test_every_form_gives_the_same_tokens(weight_files, manifest_path, tmp_path):
    m = read_manifest(manifest_path)
    stores = {}
    for form, path in weight_files.items():
        out = tmp_path / f"{form}.zarr"
        run_par("extract", manifest_path, "--out", out, "--clip-model", "par-tiny-clip", "--pretrained", path,
                "--precision", "fp32", "--workers", "0", "--batch-size", "8", "--shard-frames", "16")
        stores[form] = TokenStore(out)
    rows = np.arange(stores["torchscript"].tokens.shape[0])
    ref = stores["torchscript"].read_rows(rows)[0]
    for form, store in stores.items():
        assert np.array_equal(store.read_rows(rows)[0], ref), form
        assert store.attrs["weights"]["kind"] == "file" and store.attrs["weights"]["name"] == weight_files[form].name
    random = ClipEncoder("par-tiny-clip", None, True, "cpu", "fp32", Preprocess(), weights_seed=3)
    loaded = ClipEncoder("par-tiny-clip", str(weight_files["torchscript"]), False, "cpu", "fp32", Preprocess())
    for (k, a), b in zip(random.model.state_dict().items(), loaded.model.state_dict().values()):
        assert torch.equal(a, b), k  # the file holds exactly the weights written
    assert len(m.records) == len(stores["bin"])


def _gelu_model(tmp_path, name):
    """The tiny config without QuickGELU, registered with open_clip as `name`."""
    import open_clip

    cfg = json.loads(
        (Path(__file__).parent.parent / "data_manifests" / "models" / "clip" / "par-tiny-clip.json").read_text()
    )
    cfg.pop("quick_gelu")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "cfg")


def test_openai_archive_needs_quickgelu(weight_files, tmp_path):
    """OpenAI's weights were trained with QuickGELU: with an exact-GELU model of the same shapes it is an error."""
    _gelu_model(tmp_path, "par-tiny-clip-gelu")
    with pytest.raises(ParError, match=r"trained with QuickGELU but par-tiny-clip-gelu uses exact GELU.*"
                                       r"--clip-model par-tiny-clip-gelu-quickgelu"):
        load_clip("par-tiny-clip-gelu", str(weight_files["torchscript"]), False, 0)
    load_clip("par-tiny-clip-gelu", str(weight_files["safetensors"]), False, 0)  # provenance unknown: shapes decide


def test_known_openai_hash_needs_quickgelu(weight_files, tmp_path, monkeypatch):
    """A file recognised by sha256 as OpenAI's (data_manifests/weights/clip.json) needs QuickGELU in any form."""
    from par_pipeline.model import clip
    from par_pipeline.outputs import file_sha256

    _gelu_model(tmp_path, "par-tiny-gelu")
    sha = file_sha256(weight_files["safetensors"])
    real = clip.load_json
    monkeypatch.setattr(clip, "load_json", lambda kind, name: {"weights": {sha: {"name": "OpenAI", "quick_gelu": True}}}
                        if kind == "weights" else real(kind, name))
    with pytest.raises(ParError, match="trained with QuickGELU"):
        load_clip("par-tiny-gelu", str(weight_files["safetensors"]), False, 0)


def test_architecture_mismatch_is_an_error(weight_files):
    with pytest.raises(ParError, match=r"ViT-B-16.pt: these weights are not a ViT-B-16-quickgelu .*mis-shaped"):
        load_clip("ViT-B-16-quickgelu", str(weight_files["torchscript"]), False, 0)


def test_unreadable_and_missing_weights(tmp_path, manifest_path):
    (tmp_path / "broken.pt").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ParError, match="broken.pt: cannot read CLIP weights"):
        load_clip("par-tiny-clip", str(tmp_path / "broken.pt"), False, 0)
    proc = run_par("extract", manifest_path, "--out", tmp_path / "s.zarr", "--clip-model", "par-tiny-clip",
                   "--pretrained", tmp_path / "nothere.pt", check=False)
    assert proc.returncode == 2 and "nothere.pt: CLIP weights file not found" in proc.stderr
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "s.zarr.partial").exists()
