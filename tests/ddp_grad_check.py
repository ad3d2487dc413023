"""Run under torchrun (2 gloo ranks): DDP gradients on half-batches equal one process's on the full batch."""
import sys

import torch
import torch.distributed as dist

from par_pipeline.losses import attribute_loss
from par_pipeline.model import VTFPAR, ModelConfig

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
cfg = ModelConfig(hidden=64, heads=4, num_attributes=5, input_dim=32)
model = VTFPAR(cfg, torch.randn(5, 32))
reference = VTFPAR(cfg, torch.randn(5, 32))
reference.load_state_dict(model.state_dict())
x, y, pos_rate = torch.randn(4, 20, 32), (torch.rand(4, 5) > 0.5).float(), torch.rand(5)
ddp = torch.nn.parallel.DistributedDataParallel(model)
attribute_loss(ddp(x[rank::2]), y[rank::2], pos_rate).backward()
attribute_loss(reference(x), y, pos_rate).backward()
# Relative to the largest gradient anywhere: parameters that BatchNorm makes irrelevant have gradients of pure noise.
scale = max(float(q.grad.abs().max()) for q in reference.parameters())
worst = max(float((p.grad - q.grad).abs().max()) for p, q in zip(model.parameters(), reference.parameters())) / scale
running = float((model.bn.running_var - reference.bn.running_var).abs().max())
dist.barrier()  # tearing gloo down while the other rank is still in a collective aborts it
dist.destroy_process_group()
if rank == 0:
    print(f"worst relative gradient difference {worst:.2e}; running var difference {running:.2e}")
    sys.exit(0 if worst < 1e-3 and running < 1e-5 else 1)
