"""Prompt centring: the prompts' embeddings centred on a fixed point and rescaled before the decoder
reads them (``TGatedConfig.prompt_centring``; the ``cpu`` recipe's ``--prompt-centring vocabulary``).

A text encoder left at its random initialisation gives every prompt nearly the same embedding: for
``builtin:cpu`` the mean of the 13 organ prompts' embeddings is 88 % of their length, and "left
kidney" and "right kidney" have a cosine of 0.92. CLIPSeg's FiLM layers then see the prompts'
differences as a small part of their input, and on some seeds one kidney prompt learnt to segment
both kidneys. Centred on the run's organ prompts, the differences are the whole input. It is a
fixed affine map (nothing the decoder can express is lost), fitted once before training and saved
with the weights; every prompt goes through it, free text included.
"""

from __future__ import annotations

import torch
from torch import nn


class PromptCentring(nn.Module):
    """(K, P) conditional embeddings -> (embeddings - centre) * scale; identity until :meth:`fit`."""

    def __init__(self, projection_dim: int):
        super().__init__()
        self.register_buffer("centre", torch.zeros(projection_dim))  # (P,)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return (embeddings - self.centre) * self.scale

    @torch.no_grad()
    def fit(self, embeddings: torch.Tensor) -> None:
        """Centre on the mean of these (K, P) uncentred embeddings; scale back to their mean length."""
        centre = embeddings.mean(dim=0)
        spread = (embeddings - centre).norm(dim=-1).mean().clamp_min(1e-12)
        self.centre.copy_(centre)
        self.scale.fill_(float(embeddings.norm(dim=-1).mean() / spread))
