"""`par import vtf-par`: a checkpoint in the reference's format becomes a run that `par eval` evaluates exactly as
the reference model would. The reference side is written out here independently: its module structure and names
(models/base_block.py TransformerClassifier, whose ViT backbone it keeps whole as `vit`), and its forward by hand."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import one_error_line, run_par
from par_pipeline.data.manifest import read_manifest
from par_pipeline.data.sampling import sample_frames
from par_pipeline.store.reader import TokenStore

WIDTH, HEADS = 768, 12  # ViT-B, as the reference's vit_base


class RefAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)


class RefMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)


class RefBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(WIDTH, eps=1e-6), RefAttention()
        self.norm2, self.mlp = nn.LayerNorm(WIDTH, eps=1e-6), RefMlp()


class RefPatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, WIDTH, 16, 16)


class RefViT(nn.Module):
    """The backbone's names (one block here, to keep the file small: the importer takes the last one either way)."""

    def __init__(self, depth: int = 1):
        super().__init__()
        self.patch_embed = RefPatchEmbed()
        self.cls_token = nn.Parameter(torch.randn(1, 1, WIDTH) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 197, WIDTH) * 0.02)
        self.blocks = nn.ModuleList(RefBlock() for _ in range(depth))
        self.norm = nn.LayerNorm(WIDTH, eps=1e-6)


class RefTransformerClassifier(nn.Module):
    def __init__(self, attr_num: int, dim: int = 512):
        super().__init__()
        self.word_embed, self.visual_embed = nn.Linear(dim, WIDTH), nn.Linear(dim, WIDTH)
        self.vit = RefViT()
        self.blocks = self.vit.blocks[-1:]
        self.norm = self.vit.norm
        self.weight_layer = nn.ModuleList(nn.Linear(WIDTH, 1) for _ in range(attr_num))
        self.bn = nn.BatchNorm1d(attr_num)

    @torch.no_grad()
    def forward(self, visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Eval mode: the temporal mean of the frames' tokens and the attribute words' CLIP features -> logits."""
        def ln(x, mod):
            return F.layer_norm(x, (WIDTH,), mod.weight, mod.bias, 1e-6)

        x = torch.cat([self.word_embed(text).expand(len(visual), -1, -1), self.visual_embed(visual)], dim=1)
        blk = self.blocks[0]
        B, L, C = x.shape
        qkv = blk.attn.qkv(ln(x, blk.norm1)).reshape(B, L, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(qkv[0] @ qkv[1].transpose(-2, -1) * (C // HEADS) ** -0.5, dim=-1)
        x = x + blk.attn.proj((attn @ qkv[2]).transpose(1, 2).reshape(B, L, C))
        x = x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(ln(x, blk.norm2))))
        x = ln(x, self.norm)
        logits = torch.cat([self.weight_layer[i](x[:, i]) for i in range(len(self.weight_layer))], dim=1)
        bn = self.bn
        return (logits - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def reference_model(attr_num: int, seed: int = 0) -> RefTransformerClassifier:
    torch.manual_seed(seed)
    model = RefTransformerClassifier(attr_num)
    with torch.no_grad():  # trained-looking norms and BatchNorm statistics, not the identity they start as
        for mod in (model.norm, model.blocks[0].norm1, model.blocks[0].norm2):
            mod.weight.uniform_(0.5, 1.5)
            mod.bias.normal_(0, 0.1)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.normal_(0, 0.1)
        model.bn.running_mean.normal_(0, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.num_batches_tracked.fill_(1234)
    return model.eval()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A MARS-sized (43 attributes) reference checkpoint as train.py saves it, and the model it holds."""
    model = reference_model(43)
    path = tmp_path_factory.mktemp("ref") / "VTF-Pretrain.pth"
    torch.save({"model_state_dict": model.state_dict(), "epoch": 17}, path)
    return model, path


def eval_tokens(store_path, frames: int = 6) -> tuple[list[str], torch.Tensor]:
    """The test split's temporal means of T evenly spaced frames (the frames `par eval` evaluates), in float32."""
    s = TokenStore(store_path)
    names, means = [], []
    for i in s.indices("test"):
        valid = s.valid_frames(int(i))
        tokens, scales = s.read_rows(s.rows(int(i), valid[sample_frames(len(valid), frames, None)]))
        means.append(s.codec.decode(torch.from_numpy(tokens), None if scales is None else torch.from_numpy(scales))
                     .mean(0))
        names.append(s.tracklets[int(i)])
    return names, torch.stack(means)


def test_imported_checkpoint_evaluates_as_the_reference_model(reference, store_path, manifest_path, tmp_path):
    model, path = reference
    run = tmp_path / "run"
    out = run_par("import", "vtf-par", path, "--store", store_path, "--out", run, "--allow-other-clip")
    assert "par eval" in out.stdout
    meta = json.loads((run / "best.json").read_text())
    assert meta["imported"]["file"] == "VTF-Pretrain.pth" and len(meta["imported"]["sha256"]) == 64
    assert meta["imported"]["clip_checked"] is False and meta["epoch"] == 17 and meta["eval_frames"] == 6
    assert meta["imported"]["unused_vit_tensors"] == len([k for k in model.state_dict() if k.startswith("vit.")])
    run_par("eval", store_path, "--checkpoint", run)
    pred = np.load(run / "eval-test" / "predictions.npz")
    names, visual = eval_tokens(store_path)
    text = torch.from_numpy(TokenStore(store_path).text_features("words"))
    expected = torch.sigmoid(model(visual, text)).numpy()
    assert list(pred["tracklets"]) == names
    assert np.abs(pred["probs"] - expected).max() <= 1e-5
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    assert metrics["selection"] == "imported from VTF-Pretrain.pth (the authors' checkpoint, selected by them)"
    # `par predict` rebuilds the store's CLIP and gives a tracklet the probabilities `par eval` gave it
    m = read_manifest(manifest_path)
    rec = m.split("test")[0]
    (tmp_path / rec.tracklet).mkdir()
    for f in rec.frames:
        (tmp_path / rec.tracklet / Path(f).name).write_bytes(m.resolve(f).read_bytes())
    run_par("predict", tmp_path / rec.tracklet, "--checkpoint", run, "--frames", "6", "--json", tmp_path / "p.json")
    [predicted] = [r for r in json.loads((tmp_path / "p.json").read_text())["records"]]
    assert np.allclose(list(predicted["probabilities"].values()), pred["probs"][names.index(rec.tracklet)], atol=1e-3)
    report = run_par("report", run, "--out", tmp_path / "rep").stdout
    assert "imported from VTF-Pretrain.pth" in report
    assert "all checks passed" in " ".join(run_par("verify", run).stdout.split())


@pytest.mark.parametrize("form", ["bare", "state_dict", "data-parallel"])
def test_other_containers_of_the_same_weights(reference, store_path, tmp_path, form):
    """A bare state dict, one under 'state_dict', and DataParallel's `module.` names give the same model."""
    from safetensors.torch import load_file

    model, path = reference
    state = model.state_dict()
    saved = {"bare": state, "state_dict": {"state_dict": state},
             "data-parallel": {"model_state_dict": {f"module.{k}": v for k, v in state.items()}}}[form]
    torch.save(saved, tmp_path / "c.pth")
    for source, out in ((tmp_path / "c.pth", "a"), (path, "b")):
        run_par("import", "vtf-par", source, "--store", store_path, "--out", tmp_path / out, "--allow-other-clip")
    a, b = load_file(str(tmp_path / "a" / "best.safetensors")), load_file(str(tmp_path / "b" / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _broken(state: dict, how: str) -> dict:
    state = dict(state)
    if how == "missing-head":
        del state["weight_layer.3.weight"]
    elif how == "extra-key":
        state["classifier.weight"] = torch.zeros(2, 2)
    elif how == "wrong-shape":  # both copies of the block's first MLP layer, so that only the shape is wrong
        for key in ("blocks.0.mlp.fc1.weight", "vit.blocks.0.mlp.fc1.weight"):
            state[key] = torch.zeros(10, WIDTH)
    elif how == "alias-differs":
        state["vit.norm.weight"] = state["norm.weight"] + 1
    return state


@pytest.mark.parametrize("how,message", [
    ("missing-head", r"VTF-Pretrain-missing-head.pth: missing tensor\(s\) \['weight_layer.3.weight'\]"),
    ("extra-key", r"tensor\(s\) the VTF-PAR model does not have: \['classifier.weight'\]"),
    ("wrong-shape", r"blocks.0.mlp.fc1.weight is \(10, 768\), the VTF-PAR model needs \(3072, 768\)"),
    ("alias-differs", r"norm.weight differs from vit.norm.weight"),
    ("duke-on-mars", r"a checkpoint of 36 attributes, but \S+ holds 43 \(mars\)"),
    ("other-clip", r"made with CLIP par-tiny-clip .* needs OpenAI's ViT-B/16"),
    ("not-torch", r"cannot read it as a torch checkpoint"),
])
def test_bad_checkpoints_are_one_line_and_write_nothing(reference, store_path, tmp_path, how, message):
    model, _ = reference
    path = tmp_path / f"VTF-Pretrain-{how}.pth"
    flags = ["--allow-other-clip"]
    if how == "duke-on-mars":
        torch.save({"model_state_dict": reference_model(36).state_dict()}, path)
    elif how == "other-clip":
        torch.save({"model_state_dict": model.state_dict()}, path)
        flags = []
    elif how == "not-torch":
        path.write_bytes(b"not a checkpoint" * 10)
    else:
        torch.save({"model_state_dict": _broken(model.state_dict(), how)}, path)
    line = one_error_line(run_par("import", "vtf-par", path, "--store", store_path, "--out", tmp_path / "run", *flags,
                                  check=False))
    assert re.search(message, line), line
    assert not (tmp_path / "run").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_reference_clip_is_recognised():
    """OpenAI's ViT-B/16 by the sha256 of its file or open_clip's `openai` tag, with QuickGELU; nothing else."""
    from par_pipeline.workflows.imports import is_reference_clip

    openai_file = {"kind": "file", "name": "ViT-B-16.pt",
                   "sha256": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"}
    assert is_reference_clip({"clip_model": "ViT-B-16-quickgelu", "weights": openai_file})
    openai_tag = {"kind": "open_clip-tag", "tag": "openai"}
    assert is_reference_clip({"clip_model": "ViT-B-16-quickgelu", "weights": openai_tag})
    assert not is_reference_clip({"clip_model": "ViT-B-16", "weights": openai_file})
    assert not is_reference_clip({"clip_model": "ViT-B-16-quickgelu", "weights": {**openai_file, "sha256": "0" * 64}})
    assert not is_reference_clip({"clip_model": "ViT-B-16-quickgelu", "weights": {"kind": "random-init", "seed": 0}})


def test_an_imported_run_tracks_people(reference, store_path, scene, tmp_path):
    """`par track` takes an imported run as it takes a trained one."""
    _, path = reference
    run_par("import", "vtf-par", path, "--store", store_path, "--out", tmp_path / "run", "--allow-other-clip")
    run_par("track", scene / "video.mp4", "--checkpoint", tmp_path / "run", "--out", tmp_path / "people",
            "--detections", scene / "gt" / "gt.txt")
    doc = json.loads((tmp_path / "people" / "tracks.json").read_text())
    assert doc["tracks"] and doc["frames_per_track"] == 6 and len(doc["tracks"][0]["probabilities"]) == 43
