"""How a CLIPSeg built from random weights is initialised where transformers' generic init does not
train: the decoder's layers, and the vision encoder's position embeddings.

Pretrained weights replace all of this; it applies only to a base that is an architecture
(``builtin:NAME`` or a CLIPSeg config file), in :func:`init_random_base`. The position code draws no
random numbers, so every other weight of a seed is what it was before the code was introduced.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Amplitude of the sin-cos position code: its entries have a standard deviation of about
#: 0.35 x this (0.27 at width 64), the size of a random patch embedding's output on a unit-variance
#: input (about 0.3 on ``builtin:cpu``), so that position is as visible to the first layer as content.
POSITION_AMPLITUDE = 0.5


def reset_decoder_init(decoder: nn.Module) -> None:
    """PyTorch's default init for a random CLIPSeg decoder's linear and conv layers.

    transformers' generic init draws them from N(0, initializer_factor) = N(0, 1): a random
    model then starts with logits of +-100, saturated sigmoids and almost no gradient, and does
    not train in any reasonable time.
    """
    for module in decoder.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) fixed 2-D sin-cos position code of a square token grid in row-major order
    (as MAE's): the first half of the channels encodes the row, the second half the column, each as
    sines and cosines of ``dim / 4`` frequencies from 1 to 1/10000 cycles per token."""
    if dim % 4:
        raise ValueError(f"a 2-D sin-cos code needs a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (dim / 4,)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")

    def code(position: torch.Tensor) -> torch.Tensor:
        angle = position.reshape(-1, 1).double() * omega  # (grid * grid, dim / 4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)  # (grid * grid, dim / 2)

    return torch.cat([code(rows), code(cols)], dim=1).float()  # (grid * grid, dim)


@torch.no_grad()
def init_vision_positions(embeddings: nn.Module, amplitude: float = POSITION_AMPLITUDE) -> None:
    """A random ViT's position embeddings as a smooth 2-D sin-cos code (still trained), the class
    token's position at zero.

    transformers draws them from N(0, 0.02): about 7 % of a random patch embedding's output, and a
    different, unrelated code per token. Where an organ lies (the patient's left or right, above or
    below the liver's tip) must then be learnt token by token, from the few tokens each organ covers;
    the kidneys, which differ only by side, were the last organs a CPU run learnt. A smooth code
    makes "left" one direction that every token shares. 400 demo steps, seeds 0 and 1, 4 held-out
    phantoms: docs/training.md, "Recipes".
    """
    weight = embeddings.position_embedding.weight  # (1 + grid * grid, width)
    grid = math.isqrt(weight.shape[0] - 1)
    if grid * grid != weight.shape[0] - 1:
        raise ValueError(f"{weight.shape[0] - 1} patch positions do not form a square grid")
    weight[0].zero_()
    weight[1:].copy_(amplitude * sincos_2d(grid, weight.shape[1]))


def init_random_base(base_model: nn.Module) -> None:
    """The fixes above on a freshly built ``CLIPSegForImageSegmentation`` with random weights."""
    reset_decoder_init(base_model.decoder)
    init_vision_positions(base_model.clip.vision_model.embeddings)
