"""Stage-two machinery: the token dataset, the training step, inference, losses and metrics."""
