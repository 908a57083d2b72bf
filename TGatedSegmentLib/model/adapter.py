"""The T-Gated temporal adapter (temporal transformer, adaptive gate, spatial context block, head).

Parameter names and shapes follow the authors' ``CLIPSegTemporalAdapter`` exactly, so that the
adapter part of their state dicts loads with ``strict=True`` (keys outside ``base_model.``, see
``checkpoint.convert_reference_state_dict``). Shapes in comments: B centre slices, S slices per
window, T tokens per slice (485 = 1 class token + 22x22 patches at 352x352), C encoder width (768),
D temporal width (256).

Two wirings of the same modules (``AdapterConfig.mode``), with c the centre slice's tokens,
t the temporal transformer's output at the centre and g = sigmoid(gate_proj(t)):

* ``reference`` (the authors'): ``head(spatial(g * t + (1 - g) * c))``. The gate starts at
  sigmoid(-5) and the spatial block and head are random and not residual, so a fresh model is a
  random transform of c, and the temporal branch gets ~1/100 of the spatial block's gradient.
* ``residual`` (new models): ``c + g * head(spatial(t))`` with the head's last layer at zero, so a
  fresh adapter is the identity (the model equals the slice-wise baseline exactly), every
  temporal weight gets gradient from the first update of that layer on, and the gate starts at
  sigmoid(0) = 0.5, open enough to learn. Its temporal transformer reads the window's tokens, or
  (``AdapterConfig.temporal_input == "differences"``, ``--adapter-input differences``) each neighbour's tokens
  minus the centre slice's: whether a blob continues above and below is then in the input itself.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

from .configuration import AdapterConfig
from .probabilistic import ProbabilisticSelfAttention


class AdapterOutput(NamedTuple):
    """The adapter's decoder tokens for the centre slices and its gate, both (B, T, C)."""

    tokens: torch.Tensor
    gate: torch.Tensor


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TemporalEncoderLayer(nn.Module):
    """Pre-norm transformer layer attending across the S slices of one token position."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        ffn_dim: int,
        dropout: float,
        drop_path: float,
        attention: nn.Module | None = None,
    ):
        super().__init__()
        self.self_attn = attention or nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ffn_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
            nn.Dropout(dropout),
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, centre_only: bool = False) -> torch.Tensor:
        """(N, S, D) -> (N, S, D); ``centre_only``: just the centre position's output, (N, 1, D).

        The last layer's other outputs are never read, so it computes only the centre query and its
        feed-forward: the same numbers for a fifth of the work (ordinary attention only: the
        probabilistic layer attends all to all).
        """
        h = self.norm1(x)
        if centre_only and not isinstance(self.self_attn, ProbabilisticSelfAttention):
            c = x.shape[1] // 2
            x = x[:, c : c + 1] + self.drop_path(self.self_attn(h[:, c : c + 1], h, h, need_weights=False)[0])
        else:
            x = x + self.drop_path(self.self_attn(h, h, h, need_weights=False)[0])
            if centre_only:
                x = x[:, x.shape[1] // 2 : x.shape[1] // 2 + 1]
        return x + self.drop_path(self.ff(self.norm2(x)))


class SpatialContextBlock(nn.Module):
    """Pre-norm self-attention over the T tokens of the centre slice, then a GELU MLP."""

    def __init__(self, dim: int, nhead: int, mlp_ratio: float, dropout: float, drop_path: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, nhead, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, C)
        h = self.norm1(x)
        x = x + self.drop_path(self.attn(h, h, h, need_weights=False)[0])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TemporalAdapter(nn.Module):
    """Turns the encoder tokens of an S-slice window into decoder tokens for its centre slice.

    Depends on image tokens only (never on the prompt), so the inference engine runs it once per
    centre slice and shares the result between all prompts.
    """

    def __init__(self, config: AdapterConfig, hidden_size: int):
        super().__init__()
        self.config = config
        c, d, s = hidden_size, config.proj_dim, config.context_size
        self.proj_in = nn.Sequential(nn.Linear(c, d, bias=False), nn.LayerNorm(d))
        self.proj_out = nn.Linear(d, c, bias=False)
        self.temporal_pos_emb = nn.Parameter(torch.zeros(1, s, d))
        rates = (
            torch.linspace(0.0, config.drop_path_rate, config.num_layers, device="cpu").tolist()
            if config.num_layers > 1
            else [0.0]
        )  # (on cpu: the model may be built on the meta device)
        self.temporal_layers = nn.ModuleList(
            TemporalEncoderLayer(d, config.num_heads, config.ffn_dim, config.dropout, rate, self._attention(d))
            for rate in rates
        )
        self.transformer_norm = nn.LayerNorm(d)
        self.gate_proj = nn.Linear(c, c)
        self.spatial_context = SpatialContextBlock(
            c, config.spatial_heads, config.spatial_mlp_ratio, config.dropout, config.spatial_drop_path
        )
        self.mlp_head = nn.Sequential(
            nn.Linear(c, c),
            nn.LayerNorm(c),
            nn.GELU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(c, c),
            nn.Dropout(config.head_out_dropout),
        )
        self.reset_parameters()

    def _attention(self, d: int) -> nn.Module | None:
        if not self.config.probabilistic:
            return None  # the authors' nn.MultiheadAttention
        return ProbabilisticSelfAttention(
            d, self.config.num_heads, self.config.dropout, self.config.prob_beta, self.config.prob_init_variance
        )

    @property
    def context_size(self) -> int:
        return self.config.context_size

    @contextlib.contextmanager
    def stochastic(self):
        """Monte Carlo mode: dropout, drop-path and (if probabilistic) value sampling on, as in training.

        Only the adapter's own modules change mode; the encoders and decoder stay deterministic.
        """
        modes = {m: m.training for m in self.modules()}
        samplers = [m for m in self.modules() if isinstance(m, ProbabilisticSelfAttention)]
        self.train()
        for m in samplers:
            m.sample = True
        try:
            yield self
        finally:
            for m, mode in modes.items():
                m.training = mode
            for m in samplers:
                m.sample = None

    @property
    def method(self) -> str:
        """How :meth:`stochastic` makes predictions vary, for the outputs' metadata."""
        if self.config.probabilistic:
            return "probabilistic temporal attention (sampled Gaussian keys/values) + dropout"
        return "Monte Carlo dropout / drop-path in the temporal adapter"

    @property
    def residual(self) -> bool:
        return self.config.mode == "residual"

    def reset_parameters(self) -> None:
        nn.init.normal_(self.temporal_pos_emb, std=0.02)
        nn.init.zeros_(self.gate_proj.weight)
        nn.init.constant_(self.gate_proj.bias, self.config.gate_bias_init)
        if self.residual:  # the branch adds exactly nothing until it has learnt something
            nn.init.zeros_(self.mlp_head[4].weight)
            nn.init.zeros_(self.mlp_head[4].bias)

    def temporal(self, window: torch.Tensor) -> torch.Tensor:
        """Temporal transformer output at the centre slice: (B, S, T, C) -> (B, T, C)."""
        b, s, t, c = window.shape
        if self.config.temporal_input == "differences":  # each neighbour as its change from the centre
            centre = window[:, s // 2 : s // 2 + 1]  # (B, 1, T, C)
            window = torch.cat([window[:, : s // 2] - centre, centre, window[:, s // 2 + 1 :] - centre], dim=1)
        h = window.permute(0, 2, 1, 3).reshape(b * t, s, c)  # one sequence of S slices per token position
        h = self.proj_in(h) + self.temporal_pos_emb  # (B*T, S, D)
        last = len(self.temporal_layers) - 1
        for i, layer in enumerate(self.temporal_layers):
            h = layer(h, centre_only=i == last)  # the last layer: (B*T, 1, D)
        h = self.proj_out(self.transformer_norm(h[:, 0]))  # (B*T, C); norm and projection are per-token
        return h.reshape(b, t, c)

    def gate(self, temporal: torch.Tensor) -> torch.Tensor:
        """Per-token, per-channel blend weight in (0, 1); ~0 at initialisation."""
        return torch.sigmoid(self.gate_proj(temporal))

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        """window: (B, S, T, C) encoder tokens, centre at S // 2 -> (B, T, C) decoder tokens."""
        return self.with_gate(window).tokens

    def with_gate(self, window: torch.Tensor) -> AdapterOutput:
        """:meth:`forward`'s tokens and the gate that blended them, both (B, T, C)."""
        centre = window[:, window.shape[1] // 2]  # (B, T, C) single-slice tokens
        if self.config.ignore_context:  # the equal-capacity control: no neighbours, same computation
            window = centre.unsqueeze(1).expand_as(window)
        temporal = self.temporal(window)
        gate = self.gate(temporal)
        if self.residual:
            out = centre + gate * self.mlp_head(self.spatial_context(temporal))
        else:
            fused = gate * temporal + (1.0 - gate) * centre
            out = self.mlp_head(self.spatial_context(fused))
        return AdapterOutput(out, gate)

    def gate_penalty(self) -> torch.Tensor:
        """``mean(s * (1 - s))`` with ``s = sigmoid(gate bias)``: pushes the gate to decide (paper, Sec. 3.4)."""
        s = torch.sigmoid(self.gate_proj.bias)
        return (s * (1.0 - s)).mean()
