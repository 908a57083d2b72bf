"""Probabilistic self-attention (after MedCLIPSeg's ProbCrossAttention) for the temporal adapter.

Keys and values are Gaussian: their means are the ordinary attention projections (the same
parameters, named as in ``nn.MultiheadAttention``, so a deterministic checkpoint initialises it)
and their variances come from an extra ``var_proj`` (softplus). Attention is confidence-weighted,
``softmax(S_mu - beta * S_sigma)`` with ``S_sigma = sqrt((q*q) @ k_var^T / d)``, and values are
sampled with the reparameterisation trick when sampling is on (training, Monte Carlo inference).

``var_proj`` starts with zero weights, so every key has the same variance: ``S_sigma`` is then
constant along the softmax axis and cancels, and without sampling the layer equals the
deterministic attention exactly. Training makes the variances token-dependent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ProbabilisticSelfAttention(nn.MultiheadAttention):
    """Drop-in for ``nn.MultiheadAttention(batch_first=True)`` self-attention, called as ``(x, x, x)``."""

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.0, beta: float = 2.35, init_variance: float = 1e-3
    ):
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.beta = float(beta)
        self.init_variance = float(init_variance)
        self.var_proj = nn.Linear(embed_dim, 2 * embed_dim)  # log-variance-like scores of keys and values
        self.sample: bool | None = None  # None: sample exactly when training
        self.reset_variance()

    def reset_variance(self) -> None:
        nn.init.zeros_(self.var_proj.weight)
        # softplus(b) = init_variance
        nn.init.constant_(self.var_proj.bias, math.log(math.expm1(self.init_variance)))

    def forward(self, query, key=None, value=None, need_weights: bool = False, **kwargs):
        x = query  # (N, S, D); self-attention only
        n, s, d = x.shape
        h = self.num_heads
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        k_var, v_var = (F.softplus(self.var_proj(x)) + 1e-6).chunk(2, dim=-1)

        def heads(t):  # (N, S, D) -> (N, H, S, D/H)
            return t.view(n, s, h, d // h).transpose(1, 2)

        q, k, v, k_var, v_var = map(heads, (q, k, v, k_var, v_var))
        scale = 1.0 / math.sqrt(d // h)
        scores_mu = (q @ k.transpose(-1, -2)) * scale  # (N, H, S, S)
        scores_sigma = torch.sqrt(((q * q) @ k_var.transpose(-1, -2)) * scale * scale + 1e-12)
        attn = torch.softmax(scores_mu - self.beta * scores_sigma, dim=-1)
        attn = F.dropout(attn, self.dropout, self.training)
        sample = self.training if self.sample is None else self.sample
        if sample:
            v = v + torch.sqrt(v_var) * torch.randn_like(v)
        out = (attn @ v).transpose(1, 2).reshape(n, s, d)
        return self.out_proj(out), (attn.mean(1) if need_weights else None)
