"""The fusion model, initialisation and schedule against independent references written out here from the released
reference code (Event-AHU/VTF_PAR: models/base_block.py, models/vit.py, solver/cosine_lr.py, train.py)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import model_config
from par_pipeline.engine.step import TrainingStep
from par_pipeline.errors import ParError
from par_pipeline.model.block import load_model_config
from par_pipeline.model.fusion import VTFPAR, load_fusion_init


def reference_forward(m: VTFPAR, visual: torch.Tensor) -> torch.Tensor:
    """TransformerClassifier.forward in eval mode, from scratch: embeddings, [text; visual], one pre-norm ViT block
    (LayerNorm eps 1e-6, qkv attention with scale head_dim^-0.5, exact GELU MLP), final norm, per-attribute heads,
    BatchNorm1d with running statistics."""
    def ln(x, mod):
        return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, 1e-6)
    x = torch.cat([F.linear(m.text_features, m.text_embed.weight, m.text_embed.bias).expand(len(visual), -1, -1),
                   F.linear(visual, m.visual_embed.weight, m.visual_embed.bias)], dim=1)
    blk = m.blocks[0]
    B, L, C = x.shape
    H = m.cfg.heads
    qkv = F.linear(ln(x, blk.norm1), blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(B, L, 3, H, C // H)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) * (C // H) ** -0.5, dim=-1)
    x = x + F.linear((attn @ v).transpose(1, 2).reshape(B, L, C), blk.attn.proj.weight, blk.attn.proj.bias)
    h = F.gelu(F.linear(ln(x, blk.norm2), blk.mlp.fc1.weight, blk.mlp.fc1.bias))
    x = x + F.linear(h, blk.mlp.fc2.weight, blk.mlp.fc2.bias)
    x = ln(x, m.norm)
    A = m.text_features.shape[0]
    logits = torch.stack([x[:, i] @ m.head_weight[i] + m.head_bias[i] for i in range(A)], dim=1)
    bn = m.bn
    return (logits - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def test_forward_equals_the_reference():
    torch.manual_seed(0)
    cfg = model_config(num_attributes=7)
    m = VTFPAR(cfg, torch.randn(7, 32))
    m.train()
    for _ in range(3):  # give BatchNorm running statistics of its own
        m(torch.randn(5, 11, 32))
    m.eval()
    x = torch.randn(4, 11, 32)
    with torch.no_grad():
        assert torch.allclose(m(x), reference_forward(m, x), atol=1e-5)


def test_block_is_timms_with_drop_path_and_eps():
    from timm.models.vision_transformer import Block

    m = VTFPAR(model_config(), torch.randn(5, 32))
    blk = m.blocks[0]
    assert isinstance(blk, Block) and blk.drop_path1.drop_prob == 0.1 and blk.drop_path2.drop_prob == 0.1
    assert blk.norm1.eps == 1e-6 and blk.norm2.eps == 1e-6 and m.norm.eps == 1e-6
    assert (
        isinstance(blk.mlp.act, torch.nn.GELU) and blk.mlp.act.approximate == "none" and blk.attn.qkv.bias is not None
    )


def test_embeddings_and_heads_keep_pytorch_linear_init():
    """PyTorch's nn.Linear: weight and bias uniform in +-1/sqrt(fan_in) (not trunc_normal(0.02))."""
    torch.manual_seed(1)
    cfg = load_model_config("vtf-par", fusion=True, text_tokens=True, drop_path=0.1, temporal="mean", input_dim=512,
                            num_attributes=43)
    m = VTFPAR(cfg, torch.randn(43, 512))
    for weight, bias, fan_in in ((m.visual_embed.weight, m.visual_embed.bias, 512), (m.head_weight, m.head_bias, 768)):
        bound = 1 / math.sqrt(fan_in)
        assert float(weight.abs().max()) <= bound and float(weight.abs().max()) > 0.95 * bound
        assert abs(float(weight.std()) - bound / math.sqrt(3)) < 0.05 * bound
        assert float(bias.abs().max()) <= bound and float(bias.abs().max()) > 0.5 * bound


def test_fusion_init_takes_block_11_and_the_final_norm(tmp_path):
    from safetensors.torch import save_file

    cfg = model_config()
    m = VTFPAR(cfg, torch.randn(5, 32))
    vit = {
        f"blocks.{i}.{k}": torch.full_like(v, float(i)) for i in range(12) for k, v in m.blocks[0].state_dict().items()
    }
    vit.update(
        {"norm.weight": torch.full((64,), 7.0), "norm.bias": torch.full((64,), -7.0), "head.weight": torch.zeros(3, 64)}
    )
    save_file(vit, str(tmp_path / "vit.safetensors"))
    torch.save({"model": vit}, tmp_path / "jx_vit_base_p16_224-80ecf9dd.pth")
    for name in ("vit.safetensors", "jx_vit_base_p16_224-80ecf9dd.pth"):
        record = load_fusion_init(m, str(tmp_path / name))
        assert torch.all(m.blocks[0].attn.qkv.weight == 11.0) and torch.all(m.blocks[0].mlp.fc2.bias == 11.0)
        assert torch.all(m.norm.weight == 7.0) and torch.all(m.norm.bias == -7.0)
        assert record["kind"] == "file" and record["source_blocks"] == [11] and len(record["sha256"]) == 64
    wrong = {k: (v[..., :1] if v.dim() > 1 else v).contiguous() for k, v in vit.items()}
    save_file(wrong, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ParError, match=r"bad.safetensors: blocks.11.* the fusion model needs"):
        load_fusion_init(m, str(tmp_path / "bad.safetensors"))
    assert load_fusion_init(m, "random") == {"kind": "random"}


def reference_lr(t: int, epochs: int = 20, lr: float = 1e-3, warmup: int = 5) -> float:
    """solver/cosine_lr.py with the reference's create_scheduler(optimizer, 20, 1e-3, warmup_t=5): lr_min = 0.002*lr,
    warmup_lr_init = 0.01*lr, cycle_limit 1, evaluated at t = the 1-based epoch (train.py: scheduler.step(i))."""
    lr_min, warm_init = 0.002 * lr, 0.01 * lr
    if t < warmup:
        return warm_init + t * (lr - warm_init) / warmup
    if t // epochs >= 1:
        return lr_min
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * (t % epochs) / epochs))


def test_schedule_equals_the_references_per_epoch_rates():
    m = VTFPAR(model_config(hidden=32, num_attributes=3, input_dim=8), torch.randn(3, 8))
    steps = TrainingStep(m, lr=1e-3, weight_decay=0.0, epochs=20, warmup_epochs=5, warmup_lr=1e-5, min_lr=2e-6,
                         amp=None, pos_rate=None)
    rates = [steps.start_epoch(e) for e in range(20)]
    assert rates == pytest.approx([reference_lr(e + 1) for e in range(20)], rel=1e-9)
    assert rates[0] == pytest.approx(2.08e-4) and max(rates) == pytest.approx(8.5390e-4, rel=1e-4)
    assert int(np.argmax(rates)) == 4 and max(rates) < 1e-3  # the peak is in epoch 5; the base rate is never reached
    assert steps.optimizer.defaults["weight_decay"] == 0.0


def test_model_files_hold_the_architecture_only(tmp_path):
    """A model file's keys are exactly the architecture's: a typo is an error naming it, not a silent default; what a
    run varies comes from the training options; a saved config must be complete."""
    from par_pipeline.model.block import ARCHITECTURE, ModelConfig

    cfg = load_model_config("vtf-par-small", fusion=False, text_tokens=True, drop_path=0.3, temporal="mean",
                            input_dim=32, num_attributes=5, depth=2)
    assert (cfg.hidden, cfg.heads, cfg.depth, cfg.drop_path, cfg.fusion) == (128, 4, 2, 0.3, False)
    arch = {k: v for k, v in cfg.to_dict().items() if k in ARCHITECTURE}
    for broken, message in (({**arch, "hiden": 64}, r"unknown key\(s\) \['hiden'\]"),
                            ({**arch, "drop_path": 0.1}, r"unknown key\(s\) \['drop_path'\]"),
                            ({k: v for k, v in arch.items() if k != "heads"}, r"missing key\(s\) \['heads'\]")):
        (tmp_path / "m.json").write_text(json.dumps(broken))
        with pytest.raises(ParError, match=message):
            load_model_config(str(tmp_path / "m.json"), fusion=True, text_tokens=True, drop_path=0.1, temporal="mean",
                              input_dim=32, num_attributes=5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ParError, match=r"missing key\(s\) \['drop_path'\]"):
        ModelConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "drop_path"})
