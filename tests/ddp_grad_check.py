"""Run under torchrun (2 gloo ranks): DDP gradients on half-batches equal one process's on the full batch."""
import sys

import torch
import torch.distributed as dist

from conftest import model_config
from par_pipeline.engine.losses import attribute_loss
from par_pipeline.model.fusion import VTFPAR

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
cfg = model_config(drop_path=0.0)  # no randomness
model = VTFPAR(cfg, torch.randn(5, 32))
reference = VTFPAR(cfg, torch.randn(5, 32))
reference.load_state_dict(model.state_dict())
# The single-process reference uses torch's own BatchNorm1d (a GlobalBatchNorm1d would all-reduce with the other rank).
plain_bn = torch.nn.BatchNorm1d(5)
plain_bn.load_state_dict(reference.bn.state_dict())
reference.bn = plain_bn
x, y, pos_rate = torch.randn(4, 20, 32), (torch.rand(4, 5) > 0.5).float(), torch.rand(5)
ddp = torch.nn.parallel.DistributedDataParallel(model)
attribute_loss(ddp(x[rank::2]), y[rank::2], pos_rate).backward()
attribute_loss(reference(x), y, pos_rate).backward()
# Relative to the largest gradient anywhere: parameters that BatchNorm makes irrelevant have gradients of pure noise.
scale = max(float(q.grad.abs().max()) for q in reference.parameters())
worst = max(float((p.grad - q.grad).abs().max()) for p, q in zip(model.parameters(), reference.parameters())) / scale
running = float((model.bn.running_var - reference.bn.running_var).abs().max() / reference.bn.running_var.abs().max())
dist.barrier()  # tearing gloo down while the other rank is still in a collective aborts it
dist.destroy_process_group()
if rank == 0:
    print(f"worst relative gradient difference {worst:.2e}; relative running var difference {running:.2e}")
    sys.exit(0 if worst < 1e-3 and running < 1e-5 else 1)
