"""Parameter-efficient fine-tuning: VLSM-style bottleneck adapters in the CLIP encoders.

``f' = f + s * act(act(f W1) W2)`` (VLSM-Adapter's ``f + act(act(f W1) W2)`` with ReLU, times a
learnable scalar ``s``). ``s`` starts at 0, so a model with fresh adapters computes exactly what its
base computes, while W1 and W2 keep PyTorch's default initialisation. (Zero-initialising W2
instead would also start at the identity, but the outer ReLU's gradient at 0 is 0: such adapters
never receive a gradient and stay the identity forever.) Two placements (Dhakal et al., MICCAI 2024):

* ``dense``: after the self-attention and after the MLP of every encoder layer up to the last
  extracted one (vision and/or text), applied to the sub-block output before the residual add;
* ``shallow``: on the vision features the rest of the model reads (the extract-layer states for
  stock CLIPSeg; each slice's encoder output for the T-Gated path), on the EOT token of the text
  states at the extract layers (added to the prompt embedding), and on the prompt embedding itself
  (``conditional``).

Adapters attach to transformers' own modules through forward hooks, never by copying their code,
so the base model's parameter names stay untouched and adapter-only checkpoints load on top of
any copy of the base. Vision adapters act per slice and text adapters per prompt, so the engine's
encode-once-per-slice and embed-once-per-prompt properties hold.
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration import PeftConfig


class Bottleneck(nn.Module):
    """``x + scale * relu(fc2(relu(fc1(x))))``; ``scale`` starts at 0: the identity at initialisation,
    with non-zero gradients (for ``scale`` at once, for fc1/fc2 from the first update of ``scale``)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.scale = nn.Parameter(torch.zeros(()))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.relu(self.fc2(torch.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta(x)


def _attention_hook(adapter: Bottleneck):
    def hook(module, args, output):  # CLIPSegAttention returns (hidden_states, attn_weights)
        return (adapter(output[0]), *output[1:])

    return hook


def _mlp_hook(adapter: Bottleneck):
    def hook(module, args, output):
        return adapter(output)

    return hook


class PeftAdapters(nn.Module):
    """All bottleneck adapters of one model; ``attach`` wires the dense ones into the encoders."""

    def __init__(self, config: PeftConfig, clipseg_config, one_activation: bool):
        """``one_activation``: the decoder reads one encoder activation per slice (the authors'
        T-Gated wiring), not one per extract layer (stock CLIPSeg and the residual T-Gated mode)."""
        super().__init__()
        self.config = config
        self.one_activation = one_activation
        vision_width = clipseg_config.vision_config.hidden_size
        text_width = clipseg_config.text_config.hidden_size
        projection = clipseg_config.projection_dim
        # dense adapters on encoder layers 0..depth-1: VLSM-Adapter's count (its code: "9 adapters" for
        # rd64); the decoder also reads layer depth's output, which that layout leaves without one
        depth = max(clipseg_config.extract_layers)
        self.extract_layers = list(clipseg_config.extract_layers)
        # the text tower taps the same layer indices (both towers have 12 layers in CLIPSeg), clipped
        # for thinner test models
        self.text_taps = [min(i, clipseg_config.text_config.num_hidden_layers - 1) for i in self.extract_layers]
        dim = config.dim
        assert dim is not None, "PeftConfig.__post_init__ sets the bottleneck width"
        self.vision_dense = self.text_dense = self.vision_shallow = self.text_shallow = None
        if config.variant == "dense":
            if config.vision:
                self.vision_dense = nn.ModuleList(Bottleneck(vision_width, dim) for _ in range(2 * depth))
            if config.text:  # (a text tower shallower than the last extract layer: one pair per layer it has)
                text_depth = min(depth, clipseg_config.text_config.num_hidden_layers)
                self.text_dense = nn.ModuleList(Bottleneck(text_width, dim) for _ in range(2 * text_depth))
        else:
            if config.vision:  # one bottleneck per activation the decoder reads
                count = 1 if one_activation else len(self.extract_layers)
                self.vision_shallow = nn.ModuleList(Bottleneck(vision_width, dim) for _ in range(count))
            if config.text:
                if text_width != projection:
                    raise ValueError(
                        f"shallow text adapters add {text_width}-d EOT states to {projection}-d prompt "
                        "embeddings; they need equal widths"
                    )
                self.text_shallow = nn.ModuleList(Bottleneck(text_width, dim) for _ in self.text_taps)
        self.conditional = Bottleneck(projection, config.conditional_dim) if config.conditional else None
        self._handles: list = []

    def attach(self, base_model: nn.Module) -> None:
        """Register the dense adapters as forward hooks on the encoder layers (idempotent)."""
        self.detach()
        towers = ((self.vision_dense, base_model.clip.vision_model), (self.text_dense, base_model.clip.text_model))
        for adapters, tower in towers:
            if adapters is None:
                continue
            for i, layer in enumerate(tower.encoder.layers[: len(adapters) // 2]):
                self._handles.append(layer.self_attn.register_forward_hook(_attention_hook(adapters[2 * i])))
                self._handles.append(layer.mlp.register_forward_hook(_mlp_hook(adapters[2 * i + 1])))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def needs_text_states(self) -> bool:
        return self.text_shallow is not None

    def vision_features(self, features: torch.Tensor) -> torch.Tensor:
        """(N, L, T, C) per-slice encoder features -> the same, through the shallow vision adapters."""
        if self.vision_shallow is None:
            return features
        return torch.stack([a(f) for a, f in zip(self.vision_shallow, features.unbind(1))], dim=1)

    def text_embedding(self, embedding: torch.Tensor, hidden_states, eot_index: torch.Tensor | None) -> torch.Tensor:
        """(K, P) prompt embeddings -> adapted: plus shallow EOT deltas, then the conditional adapter."""
        if self.text_shallow is not None:
            rows = torch.arange(embedding.shape[0], device=embedding.device)
            for adapter, layer in zip(self.text_shallow, self.text_taps):
                embedding = embedding + adapter.delta(hidden_states[layer + 1][rows, eot_index])
        if self.conditional is not None:
            embedding = self.conditional(embedding)
        return embedding
