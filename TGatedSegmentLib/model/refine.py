"""A full-resolution boundary head: organ edges that follow the image, not the token grid.

CLIPSeg's decoder works on the ViT's token grid (8 x 8 or 16 x 16 tokens on the small models
this project trains on a CPU) and paints each token's tile with transposed convolutions, so
without help a mask is a union of tiles: kidneys and small organs are bounded by the grid and
shapes look like blocks. This head adds what the tokens cannot see:

* ``image_features``: a few convolutions on the input slice at full resolution (edges, intensity
  classes), computed **once per slice** and shared by every prompt, like the vision encoder. With
  ``RefineConfig.window`` > 1 the first convolution's features of the centre's nearest slices are
  mixed per pixel into the centre's (a zero-initialised 1 x 1 convolution): whether a blob
  continues above and below is then visible at full resolution, where a look-alike that lives in
  one or two slices differs from an organ that spans many (``window_mix``: through a hidden layer,
  the head can threshold "in how many slices", not only weigh them);
* ``forward``: per (slice, prompt), a pointwise mix of those features with the decoder's
  prompt-conditioned (FiLM) feature map and its coarse logits, both upsampled bilinearly; the
  result is added to the upsampled coarse logits.

The per-prompt part is 1 x 1 convolutions only (a few hundred multiply-adds per pixel), so 13
prompts cost little more than one. The output layer starts at zero: a fresh head returns the
decoder's logits, bilinearly upsampled. Shapes: N items, C head channels, R the decoder's
``reduce_dim``, g the token grid side, H = W the model input size, U distinct slices, B centre
slices, S the head's window.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .configuration import RefineConfig


@functools.lru_cache(maxsize=32)
def _bilinear_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """(n_out, n_in): 1-D bilinear resampling (``align_corners=False``) as a matrix.

    Built outside inference mode even when first asked for there (validation, segmenting): the
    cached matrix is reused by training steps, which may not save inference tensors for backward.
    """
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(n_in, dtype=torch.float64).view(n_in, 1, n_in)
        rows = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0]  # (n_in, n_out)
        return rows.t().contiguous().to(dtype=dtype, device=device)


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to ``size`` (a no-op when it already has that size).

    The same numbers as ``F.interpolate(..., "bilinear", align_corners=False)``, computed as two
    small matrix products: on a CPU its backward pass is several times faster than interpolate's.
    """
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    dev = str(x.device)
    rows = _bilinear_matrix(h, int(size[0]), x.dtype, dev)  # (H, h)
    cols = _bilinear_matrix(w, int(size[1]), x.dtype, dev)  # (W, w)
    return rows @ x @ cols.t()


def centre_rows(rows: torch.Tensor) -> torch.Tensor:
    """(B, w) window rows -> the centre's row in every position: a window head that sees no
    neighbours (the equal-capacity control, and the context-path benchmark's switch-off)."""
    w = rows.shape[1]
    return rows[:, w // 2 : w // 2 + 1].expand_as(rows)


class RefinementHead(nn.Module):
    """Image features once per slice; per prompt, a locally linear correction of the coarse logits.

    ``refined(x) = up(coarse)(x) + sum_c up(a)_c(x) * F_c(x)``: the decoder's prompt-conditioned
    token map gives, per token, the weights ``a`` of a linear classifier over the image features
    ``F``, interpolated between tokens. "Near the liver, bright smooth pixels are liver" is one such
    classifier; the boundary then lands where the image's features change, between token centres.
    """

    def __init__(self, config: RefineConfig, reduce_dim: int):
        super().__init__()
        self.config = config
        c = config.channels
        # image branch (prompt-independent): full resolution, plus a half-resolution context stage
        self.image_stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU())  # per slice
        # with a window: the stem's features of all its slices, mixed per pixel (linearly, or through a
        # hidden layer: config.window_mix) and added to the centre's, after the stem's non-linearity
        with torch.random.fork_rng(devices=[]):  # drawn aside (see reset_parameters)
            self.image_window = self._window_mix(config) if config.window > 1 else None
        self.image_context = nn.Sequential(
            nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU()
        )
        self.image_mix = nn.Conv2d(c, c, 3, padding=1)
        # prompt branch: per-token classifier weights (zero at start: a fresh head adds nothing)
        self.prompt_proj = nn.Conv2d(reduce_dim, c, 1)
        self.reset_parameters()

    @staticmethod
    def _window_mix(config: RefineConfig) -> nn.Module:
        """(B, S * C, H, W) the window's stem features -> (B, C, H, W), added to the centre's."""
        c, s = config.channels, config.window
        if config.window_mix == "linear":
            return nn.Conv2d(s * c, c, 1)
        return nn.Sequential(nn.Conv2d(s * c, 2 * c, 1), nn.ReLU(), nn.Conv2d(2 * c, c, 1))

    def reset_parameters(self) -> None:
        for module in (self.image_stem[0], self.image_context[0], self.image_context[2], self.image_mix):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
        nn.init.zeros_(self.prompt_proj.weight)
        nn.init.zeros_(self.prompt_proj.bias)
        if self.image_window is not None:
            # its output layer starts at zero: a fresh window head computes what a centre-slice head
            # does; what it draws is drawn aside, so every other weight is a centre-slice head's too
            *hidden, output = [m for m in self.image_window.modules() if isinstance(m, nn.Conv2d)]
            with torch.random.fork_rng(devices=[]):
                for module in hidden:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)
            nn.init.zeros_(output.weight)
            nn.init.zeros_(output.bias)

    def image_features(self, pixel_values: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Distinct slices (U, 3, H, W) of the model input and, per centre slice, the rows of them its
        window reads, (B, ``config.window``) with the centre in the middle -> (B, C, H, W).

        Without ``rows`` the slices are the centre slices themselves (a 1-slice head). The stem runs
        once per distinct slice, however many windows share it. The 3 channels are the same grey
        image: one is read per slice.
        """
        if rows is None:
            rows = torch.arange(pixel_values.shape[0], device=pixel_values.device).unsqueeze(1)
        if rows.shape[1] != self.config.window:
            raise ValueError(f"this refinement head reads {self.config.window} slice(s), got {rows.shape[1]}")
        centre = rows[:, rows.shape[1] // 2]
        if self.image_window is None:  # only the centre slices go through the stem
            f = self.image_stem(pixel_values.index_select(0, centre)[:, :1])  # (B, C, H, W)
        else:
            per_slice = self.image_stem(pixel_values[:, :1])  # (U, C, H, W)
            window = per_slice.index_select(0, rows.flatten()).unflatten(0, rows.shape)  # (B, S, C, H, W)
            f = per_slice.index_select(0, centre) + self.image_window(window.flatten(1, 2))
        context = upsample(self.image_context(f), f.shape[-2:])
        return self.image_mix(f + context)

    def forward(
        self, coarse: torch.Tensor, decoder_features: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """coarse (N, h, w) decoder logits, decoder_features (N, R, g, g), image_features (N, C, H, W) -> (N, H, W)."""
        size = image_features.shape[-2:]
        weights = upsample(self.prompt_proj(decoder_features), size)  # (N, C, H, W)
        return upsample(coarse.unsqueeze(1), size).squeeze(1) + (weights * image_features).sum(dim=1)
