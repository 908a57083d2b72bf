"""CLIPSeg with the T-Gated temporal adapter, split into the stages the engine and trainer reuse.

The model is transformers' ``CLIPSegForImageSegmentation`` (kept whole as ``base_model``) plus an
optional :class:`TemporalAdapter` and an optional :class:`RefinementHead`. Its forward is
decomposed into prompt-independent and prompt-dependent stages so that a volume can be processed
with each slice encoded once:

``encode_images`` (per slice) -> ``fuse`` (per centre slice, over its window) -> ``decode`` (per
slice and prompt; its decoder layers before the FiLM conditioning once per slice), with
``encode_text`` run once per prompt and ``image_features`` (the refinement head's image branch)
once per centre slice over its window's distinct slices.

* Slice-wise baseline (``adapter=None``, also the zero-shot CLIPSeg): stock CLIPSeg, whose decoder
  reads the hidden states after the ``extract_layers``.
* Residual T-Gated (``adapter.mode == "residual"``, new models): the same three activations; the
  adapter, run over the window's last extracted activation, rewrites that one as
  ``c + g * f(window)``. A fresh adapter is the identity, so both arms share the same decoder.
* Reference T-Gated (the authors' path): the vision encoder's last hidden state of every window
  slice goes through the adapter; its output is the decoder's only activation (the decoder then
  runs ``layers[0]`` and ``reduces[0]`` alone).

``decode`` always returns logits at the model's input size: CLIPSeg's transposed convolutions
upsample by ``patch_size`` only for patch 16; with smaller patches the rest is bilinear, or the
refinement head's full-resolution output.

Shapes: N slices, B centre slices, S window slices, L decoder activations, T tokens, C width,
K prompts, P projection dim, H = W = image size, F refinement channels.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn

from .adapter import TemporalAdapter
from .configuration import TGatedConfig
from .peft import PeftAdapters
from .prompt_centring import PromptCentring
from .refine import RefinementHead, centre_rows, upsample
from .vision_states import extracted_states


def conditioned_activation(clipseg_config) -> int:
    """Index (encoder order) of the extracted activation that CLIPSeg's decoder adds in at its FiLM
    layer (``conditional_layer``; the decoder reads the activations deepest first).

    The residual adapter rewrites this one in new models: it is the activation the prompt-conditioned
    decoder cannot route around. With ``builtin:cpu`` (FiLM before the last decoder layer) a decoder
    trained 750 steps ignored the deepest activation entirely (zeroing it changed no organ's Dice),
    so context written there changed nothing.
    """
    n = len(clipseg_config.extract_layers)
    return n - 1 - min(int(clipseg_config.conditional_layer), n - 1)


class Fused(NamedTuple):
    """The decoder input of the centre slices, (B, L, T, C), and the adapter's gate, (B, T, C) or None."""

    tokens: torch.Tensor
    gate: torch.Tensor | None


class TGatedCLIPSeg(nn.Module):
    """T-Gated CLIPSeg. ``forward`` matches the authors' ``CLIPSegTemporalAdapter.forward``."""

    def __init__(self, config: TGatedConfig, base_model: nn.Module | None = None):
        super().__init__()
        if base_model is None:  # transformers' CLIPSeg modelling code loads only when a model is built (seconds)
            from transformers.models.clipseg.modeling_clipseg import CLIPSegForImageSegmentation

            base_model = CLIPSegForImageSegmentation(config.clipseg())
        self.config = config
        self.base_model = base_model
        hidden = self.base_model.config.vision_config.hidden_size
        self.adapter = TemporalAdapter(config.adapter, hidden) if config.adapter is not None else None
        self.refine = (
            RefinementHead(config.refine, self.base_model.config.reduce_dim) if config.refine is not None else None
        )
        # set by set_finetune: run the vision encoder under no_grad when nothing in it needs gradients
        self.vision_without_grad = False
        self.peft = None
        if config.peft is not None:
            # the shallow vision adapters sit on what the decoder reads: one activation in the authors' wiring
            self.peft = PeftAdapters(config.peft, self.base_model.config, one_activation=self.num_activations == 1)
            self.peft.attach(self.base_model)
        # the context head (``AdapterConfig.context_head``): per-token, per-prompt organ logits read
        # linearly off the adapter's output (:meth:`_context_logits`). Zero-initialised and built without
        # drawing random numbers, so every other module starts from the same weights with and without it.
        self.context_probe = None
        if self.adapter is not None and self.adapter.config.context_head != "none":
            with torch.random.fork_rng(devices=[]):
                self.context_probe = nn.Linear(hidden, self.base_model.config.projection_dim)
            nn.init.zeros_(self.context_probe.weight)  # logits 0 at the start; the weights learn first
            nn.init.zeros_(self.context_probe.bias)
        # fixed (not trained) centre and scale of the prompts' embeddings, if any: see prompt_centring.py
        projection = self.base_model.config.projection_dim
        self.prompt_centring = PromptCentring(projection) if config.prompt_centring else None
        #: (M, T - 1) of the last training decode with a context head (None otherwise): see
        #: :meth:`_context_logits`. Kept on the module so that ``decode`` keeps one return type.
        self.context_logits: torch.Tensor | None = None

    # -- properties -----------------------------------------------------------------------------
    @property
    def temporal(self) -> bool:
        return self.adapter is not None

    @property
    def context_size(self) -> int:
        return self.adapter.context_size if self.adapter is not None else 1

    @property
    def reference_wiring(self) -> bool:
        """The authors' adapter path: one activation (the last encoder state) into the decoder."""
        return self.adapter is not None and not self.adapter.residual

    @property
    def num_activations(self) -> int:
        """L: encoder activations kept per slice (1 for the authors' adapter path, else the extract layers)."""
        return 1 if self.reference_wiring else len(self.base_model.config.extract_layers)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # -- stages ---------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, L, T, C): what the rest of the model needs from each slice."""
        return self.adapt_tokens(self.vision_tokens(pixel_values))

    @property
    def token_layers(self) -> list[int] | str:
        """Which vision hidden states :meth:`vision_tokens` keeps: the extract layers, or "last"."""
        return "last" if self.reference_wiring else list(self.base_model.config.extract_layers)

    def vision_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, L, T, C) vision-encoder states, before any shallow PEFT adapter
        (what ``--token-cache`` stores)."""
        vision = self.base_model.clip.vision_model
        # frozen encoder, no dense vision adapter: nothing to backpropagate into, so record nothing
        no_grad = self.vision_without_grad and torch.is_grad_enabled()
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            if self.reference_wiring:
                return vision(pixel_values=pixel_values).last_hidden_state.unsqueeze(1)
            return torch.stack(extracted_states(vision, pixel_values, self.base_model.config.extract_layers), dim=1)

    def adapt_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, T, C) vision states -> the same through the shallow PEFT vision adapters, if any."""
        return self.peft.vision_features(tokens) if self.peft is not None else tokens

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, centred: bool = True
    ) -> torch.Tensor:
        """(K, tokens) -> (K, P) conditional embeddings (pooled EOS state x text projection, then the
        prompt centring if the model has one and ``centred``).

        Called on the submodules directly, not through ``get_conditional_embeddings``, which runs
        under ``no_grad`` and would silently freeze the text encoder in training.
        """
        clip = self.base_model.clip
        states = self.peft is not None and self.peft.needs_text_states
        out = clip.text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=states)
        embedding = clip.text_projection(out.pooler_output)
        if self.peft is not None:
            embedding = self.peft.text_embedding(
                embedding, out.hidden_states, self._eot_index(input_ids) if states else None
            )
        if self.prompt_centring is not None and centred:
            embedding = self.prompt_centring(embedding)
        return embedding

    def fit_prompt_centre(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> None:
        """Centre the prompts' embeddings on these prompts' (K, tokens) mean (``prompt_centring.py``)."""
        with torch.no_grad():
            self.prompt_centring.fit(self.encode_text(input_ids, attention_mask, centred=False))

    def _eot_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Where CLIP's text model pools: the first end-of-text token (the highest id for old configs)."""
        eos = self.base_model.config.text_config.eos_token_id
        if eos == 2:
            return input_ids.argmax(dim=-1)
        return (input_ids == eos).int().argmax(dim=-1)

    def fuse(self, window: torch.Tensor) -> torch.Tensor:
        """(B, S, L, T, C) window features -> (B, L, T, C) decoder input for the centre slices."""
        return self.fuse_with_gate(window).tokens

    def fuse_with_gate(self, window: torch.Tensor) -> Fused:
        """:meth:`fuse`'s decoder input and the adapter's gate, (B, T, C) (None for the baseline)."""
        centre = window[:, window.shape[1] // 2]  # (B, L, T, C)
        if self.adapter is None:
            return Fused(centre, None)
        if self.reference_wiring:
            out, gate = self.adapter.with_gate(window[:, :, -1])  # (B, T, C) each
            return Fused(out.unsqueeze(1), gate)
        a = self.adapter.config.activation % centre.shape[1]  # only this activation is rewritten
        out, gate = self.adapter.with_gate(window[:, :, a])  # (B, T, C) each
        return Fused(torch.cat([centre[:, :a], out.unsqueeze(1), centre[:, a + 1 :]], dim=1), gate)

    @property
    def refine_window(self) -> int:
        """Slices the refinement head's image branch reads per centre slice (1 without a head)."""
        return self.refine.config.window if self.refine is not None else 1

    def image_features(self, pixel_values: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """The refinement head's features of the centre slices, (B, F, H, W) (None without a head).

        ``pixel_values`` (U, 3, H, W) distinct slices; ``rows`` (B, :attr:`refine_window`) the rows of
        them each centre's window reads, centre in the middle, edges replicated (without it the
        slices are the centres). The equal-capacity control (``ignore_context``) reads its centre
        slice in every position, as its adapter does."""
        if self.refine is None:
            return None
        if rows is not None and self.adapter is not None and self.adapter.config.ignore_context:
            rows = centre_rows(rows)
        return self.refine.image_features(pixel_values, rows)

    def decode(
        self,
        features: torch.Tensor,
        text_embeddings: torch.Tensor,
        image_features: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder input (B, L, T, C), prompt embeddings (K, P) and, with a refinement head, its
        (B, F, H, W) image features -> (M, H, W) logits at the model's input size.

        ``items`` (M, 2): the (row of ``features``, row of ``text_embeddings``) pairs to decode;
        without it row i of the features goes with row i of the prompts (M = B = K).
        """
        if items is None:
            if features.shape[0] != text_embeddings.shape[0]:
                raise ValueError("decode without items pairs feature and prompt rows one to one")
            items = torch.arange(features.shape[0], device=features.device).unsqueeze(1).expand(-1, 2)
        centre, prompt = items[:, 0], items[:, 1]
        tokens = self._decoder_tokens(features, text_embeddings, centre, prompt)  # (M, R, g, g)
        decoder = self.base_model.decoder
        logits = decoder.transposed_convolution(tokens).squeeze(1)  # (M, h, w)
        self.context_logits = None
        adds_logits = self.context_probe is not None and self.adapter.config.context_head == "logits"
        if self.context_probe is not None and (self.training or adds_logits):  # a "loss" head: training only
            context = self._context_logits(features, text_embeddings, items)  # (M, g * g)
            self.context_logits = context if self.training else None
            if adds_logits:
                grid = context.view(-1, 1, tokens.shape[-2], tokens.shape[-1])
                logits = logits + upsample(grid, logits.shape[-2:]).squeeze(1)
        size = (tokens.shape[-1] * self.base_model.config.vision_config.patch_size,) * 2
        if self.refine is None:
            return upsample(logits.unsqueeze(1), size).squeeze(1)
        if image_features is None:
            raise ValueError("this model has a refinement head: pass image_features(centre pixels) to decode")
        return self.refine(logits, tokens, image_features.index_select(0, centre))

    def _decoder_tokens(
        self, features: torch.Tensor, text: torch.Tensor, centre: torch.Tensor, prompt: torch.Tensor
    ) -> torch.Tensor:
        """CLIPSeg's decoder up to its transposed convolutions, run with its own modules, where the
        work belongs: the layers before the FiLM conditioning (``conditional_layer``) see no prompt
        and run once per slice (B rows); the FiLM and the layers after it run per item (M rows).

        The same numbers as ``CLIPSegDecoder.forward`` (tested); what it saves grows with the
        conditional layer (0 for the published CLIPSeg: only the skip projections are shared).
        (B, L, T, C) features, (K, P) text, (M,) centre and prompt rows -> (M, R, g, g).
        """
        decoder = self.base_model.decoder
        activations = features.unbind(dim=1)[::-1]  # deepest first, as CLIPSeg's decoder reads them
        # the authors' one-activation wiring runs only the first layer: an architecture that conditions
        # later (builtin:cpu) gets its FiLM there (stock CLIPSeg would silently apply none)
        conditional = min(decoder.conditional_layer, len(activations) - 1)
        out = None
        for i, (activation, layer, reduce) in enumerate(zip(activations, decoder.layers, decoder.reduces)):
            skip = reduce(activation)  # (B, T, R)
            if i > conditional:
                skip = skip.index_select(0, centre)  # (M, T, R)
            out = skip if out is None else skip + out
            if i == conditional:  # from here on, one row per (slice, prompt)
                # index_select: its backward is a fraction of advanced indexing's on a CPU
                out = out.index_select(0, centre)
                cond = text.index_select(0, prompt)  # (M, P)
                out = decoder.film_mul(cond).unsqueeze(1) * out + decoder.film_add(cond).unsqueeze(1)
            out = layer(out, attention_mask=None)
            out = out[0] if isinstance(out, tuple) else out
        grid = int(round((out.shape[1] - 1) ** 0.5))
        return out[:, 1:].transpose(1, 2).reshape(out.shape[0], -1, grid, grid)  # drop CLS: (M, R, g, g)

    # -- whole model ------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        windows: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
        tokens: torch.Tensor | None = None,
    ):
        """Two ways in (one ``forward``, so that DistributedDataParallel sees every use):

        * one prompt per sample, as the authors' ``CLIPSegTemporalAdapter.forward``: pixel_values
          (B, S, 3, H, W) windows (or (B, 3, H, W) single slices for the baseline), input_ids
          (B, tokens) -> logits (B, H, W);
        * multi-prompt (``windows`` and ``items`` given), as the inference engine runs a volume:
          pixel_values (U, 3, H, W) distinct slices, each encoded once; windows (B, S) rows of them
          per centre slice; input_ids (K, tokens) distinct prompts, each encoded once; items (M, 2)
          (centre, prompt) pairs to decode -> logits (M, H, W). ``tokens`` (U, L, T, C): those
          slices' :meth:`vision_tokens`, already computed (``--token-cache``); the pixels then only
          feed the refinement head.
        """
        if windows is not None:
            return self._forward_items(pixel_values, windows, input_ids, attention_mask, items, tokens)
        if pixel_values.ndim == 4:
            pixel_values = pixel_values.unsqueeze(1)
        b, s = pixel_values.shape[:2]
        if s != self.context_size:
            centre = s // 2
            half = self.context_size // 2
            if self.temporal or s < 1:
                raise ValueError(f"expected windows of {self.context_size} slices, got {s}")
            pixel_values = pixel_values[:, centre - half : centre + half + 1]
            s = self.context_size
        windows = torch.arange(b * s, device=pixel_values.device).view(b, s)
        items = torch.arange(b, device=pixel_values.device).unsqueeze(1).expand(b, 2)
        return self._forward_items(pixel_values.flatten(0, 1), windows, input_ids, attention_mask, items)

    def _forward_items(self, pixel_values, windows, input_ids, attention_mask, items, tokens=None) -> torch.Tensor:
        if windows.shape[1] != self.context_size:
            raise ValueError(f"expected windows of {self.context_size} slices, got {windows.shape[1]}")
        b, s = windows.shape
        features = self.encode_images(pixel_values) if tokens is None else self.adapt_tokens(tokens)  # (U, L, T, C)
        window = features.index_select(0, windows.flatten()).unflatten(0, (b, s))  # (B, S, L, T, C)
        fused = self.fuse(window)  # (B, L, T, C)
        image = None
        if self.refine is not None:
            w = self.refine_window
            rows = windows[:, s // 2 - w // 2 : s // 2 + w // 2 + 1]  # (B, w): the centre and its w - 1 nearest
            image = self.image_features(pixel_values, rows)  # (B, F, H, W)
        text = self.encode_text(input_ids, attention_mask)  # (K, P)
        return self.decode(fused, text, image, items)  # (M, H, W)

    def _context_logits(self, fused: torch.Tensor, text: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per-token organ logits of each item, read linearly off the activation the adapter rewrote:
        ``probe(token) . text`` -> (M, T - 1), patch tokens in row-major order (CLS dropped).

        The context head (``AdapterConfig.context_head``): a short, direct path from the prediction
        (``"logits"``) and from ``--context-loss`` to the adapter, for what only the neighbours can tell.
        """
        a = self.adapter.config.activation % fused.shape[1]
        probe = self.context_probe(fused[:, a, 1:])  # (B, T - 1, P)
        per_prompt = torch.einsum("btp,kp->bkt", probe, text)  # (B, K, T - 1)
        return per_prompt[items[:, 0], items[:, 1]]  # (M, T - 1)

    # -- fine-tuning modes ---------------------------------------------------------------------------
    FINETUNE_MODES = ("full", "decoder", "adapters")

    def trainable_names(self, finetune: str = "full") -> list[str]:
        """Parameters trained in each mode: ``full`` everything (the paper); ``decoder`` the CLIPSeg
        decoder and the temporal adapter, CLIP frozen; ``adapters`` the temporal adapter and the PEFT
        bottlenecks only, CLIP and the decoder frozen (VLSM-Adapter)."""
        if finetune not in self.FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {self.FINETUNE_MODES}, got {finetune!r}")
        names = [n for n, _ in self.named_parameters()]
        if finetune == "full":
            return names
        keep = ("adapter.", "context_probe.", "peft.", "refine.") + (
            ("base_model.decoder.",) if finetune == "decoder" else ()
        )
        return [n for n in names if n.startswith(keep)]

    def set_finetune(self, finetune: str = "full") -> list[str]:
        """Freeze everything outside ``trainable_names(finetune)``; returns the trained names.

        Also switches the vision encoder to ``no_grad`` when nothing in it needs gradients
        (``vision_needs_grad`` False: frozen CLIP and no dense vision adapter).
        """
        trained = set(self.trainable_names(finetune))
        for name, param in self.named_parameters():
            param.requires_grad_(name in trained)
        self.vision_without_grad = not self.vision_needs_grad
        return sorted(trained)

    @property
    def vision_needs_grad(self) -> bool:
        """Whether backpropagation must go through the vision encoder (else it can run under no_grad)."""
        vision = self.base_model.clip.vision_model
        return any(p.requires_grad for p in vision.parameters()) or (
            self.peft is not None
            and self.peft.vision_dense is not None
            and any(p.requires_grad for p in self.peft.vision_dense.parameters())
        )

    def gate_penalty(self) -> torch.Tensor:
        if self.adapter is None:
            return torch.zeros((), device=self.device)
        return self.adapter.gate_penalty()
