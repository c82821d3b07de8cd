"""The PAR head of MambaPAR/VTB: tokens -> one feature per attribute -> one logit per attribute."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PARHead(nn.Module):
    """Conv1d over tokens (T -> A, kernel 1), one Linear(dim -> 1) per attribute, BatchNorm1d(A).

    The A per-attribute linears are stored as one (A, dim) weight and (A,) bias: logit_a = w_a · f_a + b_a,
    the same function as A separate `nn.Linear(dim, 1)` layers, in one batched op.
    """

    def __init__(self, num_tokens: int, num_attrs: int, dim: int = 768) -> None:
        super().__init__()
        if num_attrs < 1:
            raise ValueError(f"num_attrs must be >= 1, got {num_attrs}")
        self.num_tokens, self.num_attrs, self.dim = num_tokens, num_attrs, dim
        self.token_mix = nn.Conv1d(num_tokens, num_attrs, kernel_size=1)
        self.weight = nn.Parameter(torch.empty(num_attrs, dim))
        self.bias = nn.Parameter(torch.empty(num_attrs))
        bound = 1 / math.sqrt(dim)  # nn.Linear(dim, 1)'s default init, per attribute
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        self.bn = nn.BatchNorm1d(num_attrs)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T, dim) -> logits (B, A)."""
        if tokens.shape[1:] != (self.num_tokens, self.dim):
            raise ValueError(f"expected tokens (B, {self.num_tokens}, {self.dim}), got {tuple(tokens.shape)}")
        feats = self.token_mix(tokens)  # (B, A, dim): channels are tokens
        logits = (feats * self.weight).sum(-1) + self.bias
        return self.bn(logits)
