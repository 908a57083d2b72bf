"""CLIPSeg in plain PyTorch for inference: transformers' modules, parameter names and numbers, without transformers.

Why it exists (issue 12): importing transformers' ``modeling_clipseg`` pulls in torch.distributed,
torch._dynamo, the hub-kernel and sharding machinery and scans the whole package, about twice the
cost of ``import torch`` itself, so it was the largest fixed cost of a one-slice ``tgated segment``.
Inference needs none of it. This module restates the few CLIPSeg blocks the model runs (pre-norm
ViT/text encoders, the post-norm decoder layers, FiLM and the transposed convolutions) with the same
module tree, so a checkpoint's ``base_model.*`` tensors load into it unchanged, PEFT hooks attach to
the same ``self_attn``/``mlp`` modules, and the logits equal transformers' to float round-off
(``Testing/test_fast_load.py``). Training keeps transformers' model (gradient checkpointing, its
initialisation); :mod:`.fast_load` decides which one a checkpoint gets.

Attention is ``F.scaled_dot_product_attention`` (what transformers' ``sdpa`` implementation calls).

Shapes: N images, K prompts, T tokens (1 + g*g for a g x g patch grid), C width, H = W image size.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

# transformers' defaults for keys a stored config may lack (CLIPSeg{,Text,Vision}Config.__init__)
_COMMON = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "attention_dropout": 0.0}
_TEXT_DEFAULTS = {**_COMMON, "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                  "num_attention_heads": 8, "max_position_embeddings": 77, "eos_token_id": 49407, "pad_token_id": 1,
                  "bos_token_id": 49406}
_VISION_DEFAULTS = {**_COMMON, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                    "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32}
_DEFAULTS = {"projection_dim": 512, "logit_scale_init_value": 2.6592, "extract_layers": [3, 6, 9], "reduce_dim": 64,
             "decoder_num_attention_heads": 4, "decoder_intermediate_size": 2048, "conditional_layer": 0,
             "use_complex_transposed_convolution": False}


class NativeConfig(SimpleNamespace):
    """A stored ``clipseg_config`` dict read as attributes, with transformers' defaults for missing keys.

    Offers what the rest of the package reads from a ``CLIPSegConfig`` (``vision_config.hidden_size``,
    ``extract_layers``, ``to_dict()``, ...); ``to_dict`` returns the dict it was made from.
    """

    def __init__(self, values: dict, defaults: dict | None = None):
        values = copy.deepcopy(dict(values))
        merged = {**(defaults if defaults is not None else _DEFAULTS), **values}
        if defaults is None:
            merged["text_config"] = NativeConfig(values.get("text_config") or {}, _TEXT_DEFAULTS)
            merged["vision_config"] = NativeConfig(values.get("vision_config") or {}, _VISION_DEFAULTS)
        super().__init__(**merged)
        self._values, self._defaults = values, defaults

    def to_dict(self) -> dict:
        return copy.deepcopy(self._values)

    def __reduce__(self):  # copy.deepcopy / pickle: rebuilt from what it was made of
        return NativeConfig, (self._values, self._defaults)


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu", "relu", "silu"):
        return getattr(F, name)
    if name == "gelu_new" or name == "gelu_pytorch_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"activation '{name}' is not supported by the native CLIPSeg; load with transformers instead")


def _positions(n: int) -> torch.Tensor:
    """(1, n) position ids 0..n-1, made on the CPU even while a model is built on ``meta`` (checkpoints
    do not store them; an op on meta tensors would import torch's symbolic-shape machinery)."""
    return torch.arange(n, device="cpu").expand((1, -1))


class Attention(nn.Module):
    """Multi-head self-attention; returns ``(output, None)`` as transformers' ``CLIPSegAttention``
    (PEFT's hooks read ``output[0]``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, width // heads
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None):
        n, t, c = hidden_states.shape  # (N, T, C)
        split = lambda x: x.view(n, t, self.num_heads, self.head_dim).transpose(1, 2)  # noqa: E731  (N, h, T, d)
        q, k, v = split(self.q_proj(hidden_states)), split(self.k_proj(hidden_states)), split(self.v_proj(hidden_states))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, scale=self.head_dim ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(n, t, c)), None


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, act: str):
        super().__init__()
        self.activation_fn = _activation(act)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer (CLIP's encoders)."""

    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.self_attn = Attention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, cfg.hidden_act)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), attention_mask)[0]
        return x + self.mlp(self.layer_norm2(x))


class DecoderLayer(EncoderLayer):
    """Post-norm transformer layer (CLIPSeg's decoder); returns a tensor, as transformers' does."""

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.layer_norm1(x + self.self_attn(x, attention_mask)[0])
        return self.layer_norm2(x + self.mlp(x))


class Encoder(nn.Module):
    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None, keep: bool = False):
        """-> (last state, (input, output of layer 1, ..., output of layer n)) when ``keep``, else (last, None)."""
        states = [x] if keep else None
        for layer in self.layers:
            x = layer(x, attention_mask)
            if keep:
                states.append(x)
        return x, (tuple(states) if keep else None)


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.class_embedding = nn.Parameter(torch.empty(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, cfg.patch_size, bias=False)
        self.num_positions = (cfg.image_size // cfg.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(self.num_positions, cfg.hidden_size)
        self.register_buffer("position_ids", _positions(self.num_positions), persistent=False)

    def positions(self, height: int, width: int) -> torch.Tensor:
        """(1, T, C) position embeddings, bicubically resized when the grid differs (transformers' rule)."""
        table = self.position_embedding.weight.unsqueeze(0)  # (1, P, C)
        side, grid = int(math.sqrt(self.num_positions - 1)), (height // self.patch_size, width // self.patch_size)
        if grid == (side, side):
            return self.position_embedding(self.position_ids)
        patch = table[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=grid, mode="bicubic", align_corners=False)
        return torch.cat([table[:, :1], patch.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, T, C)
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.positions(*pixel_values.shape[-2:])


class VisionModel(nn.Module):
    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False, **_):
        last, states = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)), keep=output_hidden_states)
        return SimpleNamespace(last_hidden_state=last, hidden_states=states,
                               pooler_output=self.post_layernorm(last[:, 0]))


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.register_buffer("position_ids", _positions(cfg.max_position_embeddings), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(input_ids) + self.position_embedding(self.position_ids[:, :input_ids.shape[-1]])


class TextModel(nn.Module):
    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.eos_token_id = cfg.eos_token_id

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, **_):
        """Causal attention that also skips padding keys; pooled at the (first) end-of-text token."""
        k, t = input_ids.shape
        mask = torch.ones(t, t, dtype=torch.bool, device=input_ids.device).tril().expand(k, 1, t, t)
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]
        last, states = self.encoder(self.embeddings(input_ids), mask, keep=output_hidden_states)
        last = self.final_layer_norm(last)
        if self.eos_token_id == 2:  # configs from before transformers PR #24773: the highest id is the EOS
            eos = input_ids.to(torch.int).argmax(dim=-1)
        else:
            eos = (input_ids.to(torch.int) == self.eos_token_id).int().argmax(dim=-1)
        return SimpleNamespace(last_hidden_state=last, hidden_states=states,
                               pooler_output=last[torch.arange(k, device=last.device), eos])


class CLIP(nn.Module):
    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.text_model = TextModel(cfg.text_config)
        self.vision_model = VisionModel(cfg.vision_config)
        self.visual_projection = nn.Linear(cfg.vision_config.hidden_size, cfg.projection_dim, bias=False)
        self.text_projection = nn.Linear(cfg.text_config.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init_value)))


class Decoder(nn.Module):
    """The decoder's modules; :meth:`TGatedCLIPSeg.decode` runs them (FiLM at ``conditional_layer``)."""

    def __init__(self, cfg: NativeConfig):
        super().__init__()
        self.conditional_layer = cfg.conditional_layer
        self.film_mul = nn.Linear(cfg.projection_dim, cfg.reduce_dim)
        self.film_add = nn.Linear(cfg.projection_dim, cfg.reduce_dim)
        patch = cfg.vision_config.patch_size
        if cfg.use_complex_transposed_convolution:
            k = patch // 4
            self.transposed_convolution = nn.Sequential(
                nn.Conv2d(cfg.reduce_dim, cfg.reduce_dim, kernel_size=3, padding=1), nn.ReLU(),
                nn.ConvTranspose2d(cfg.reduce_dim, cfg.reduce_dim // 2, kernel_size=k, stride=k), nn.ReLU(),
                nn.ConvTranspose2d(cfg.reduce_dim // 2, 1, kernel_size=k, stride=k))
        else:
            self.transposed_convolution = nn.ConvTranspose2d(cfg.reduce_dim, 1, patch, stride=patch)
        self.reduces = nn.ModuleList([nn.Linear(cfg.vision_config.hidden_size, cfg.reduce_dim)
                                      for _ in cfg.extract_layers])
        # transformers builds the decoder layers from the vision config with these sizes and ReLU
        layer = NativeConfig({**cfg.vision_config.to_dict(), "hidden_size": cfg.reduce_dim,
                              "num_attention_heads": cfg.decoder_num_attention_heads,
                              "intermediate_size": cfg.decoder_intermediate_size, "hidden_act": "relu"},
                             _VISION_DEFAULTS)
        self.layers = nn.ModuleList([DecoderLayer(layer) for _ in cfg.extract_layers])


class NativeCLIPSeg(nn.Module):
    """Stands in for ``CLIPSegForImageSegmentation`` as ``TGatedCLIPSeg.base_model`` at inference."""

    def __init__(self, clipseg_config: dict):
        super().__init__()
        self.config = NativeConfig(clipseg_config)
        self.clip = CLIP(self.config)
        self.extract_layers = list(self.config.extract_layers)
        self.decoder = Decoder(self.config)
