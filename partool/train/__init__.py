"""Training: the loop, losses, distillation, checkpoint and resume."""
