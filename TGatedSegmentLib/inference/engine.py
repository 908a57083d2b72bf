"""Streaming volumetric inference: each slice encoded once, each window fused once, all prompts decoded together.

For a volume of N slices, K prompts and an S-slice window the engine runs the vision encoder N
times (batched), the adapter N times (once per centre slice, whatever K is), the text encoder K
times (once per volume, cached across volumes) and the decoder N*K times. The naive scheme (the
authors' inference) re-encodes the whole window for every slice-prompt pair: N*K*S encoder passes.

Memory holds a rolling window of encoded slices (at most ``2 * batch_size + S - 1`` slices of
(L, T, C) tokens), never the whole volume's tokens.

Windows at the volume's ends replicate the first/last slice, as in the paper.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..model.modeling import TGatedCLIPSeg
from ..model.tokenizer import tokenize
from ..preprocessing.slices import SliceCodec
from ..progress import CancelToken, Progress

# Slices (canonical, [0, 1]) for the given indices -> (n, Y, X) array.
SliceReader = Callable[[np.ndarray], np.ndarray]


@dataclass
class EngineStats:
    """Work counters and wall-clock per stage, for tests (encode-once) and benchmarks."""

    slices_encoded: int = 0
    windows_fused: int = 0
    decoder_items: int = 0
    prompts_encoded: int = 0
    peak_cached_slices: int = 0
    seconds: dict = field(default_factory=lambda: {"preprocess": 0.0, "encode": 0.0, "fuse": 0.0, "decode": 0.0,
                                                   "text": 0.0})


def window_indices(centre: int, depth: int, context: int) -> list[int]:
    """Slice indices of the window around ``centre``, edges replicated."""
    half = context // 2
    return [min(max(centre + offset, 0), depth - 1) for offset in range(-half, half + 1)]


class StreamingEngine:
    """Runs a :class:`TGatedCLIPSeg` over a volume slice by slice.

    ``amp`` (CUDA only) runs the model under float16/bfloat16 autocast; everything returned is
    float32 either way.
    """

    def __init__(self, model: TGatedCLIPSeg, tokenizer, codec: SliceCodec, batch_size: int = 4,
                 amp: str | None = None, text_cache_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self.batch_size = max(1, int(batch_size))
        self.device = codec.device
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp) if self.device.type == "cuda" else None
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self.stats = EngineStats()

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- text ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """(K, P) prompt embeddings, each prompt encoded once per engine (LRU-cached)."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            start = time.perf_counter()
            ids, mask = tokenize(self.tokenizer, missing, self.device)
            with self._autocast():
                embeddings = self.model.encode_text(ids, mask)
            embeddings = embeddings.float() if self.amp_dtype is not None else embeddings
            for prompt, emb in zip(missing, embeddings):
                self._text_cache[prompt] = emb
            self.stats.prompts_encoded += len(missing)
            self.stats.seconds["text"] += time.perf_counter() - start
        for prompt in prompts:
            self._text_cache.move_to_end(prompt)
        while len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)
        return torch.stack([self._text_cache[p] for p in prompts])

    # -- volume ---------------------------------------------------------------------------------
    def _windows(self, read_slices: SliceReader, depth: int, progress: Progress | None, cancel: CancelToken | None,
                 stage: str) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor | None]]:
        """Yields ``(centres, window, image)`` per batch of centre slices; window: (B, S, L, T, C),
        image: the refinement head's (B, F, H, W) features of the centre slices (None without one).

        Each slice goes through the vision encoder once; only the slices some pending window still
        needs stay cached (with their model-input pixels when the refinement head needs them).
        """
        model, stats = self.model, self.stats
        context = model.context_size
        half = context // 2
        cache: dict[int, torch.Tensor] = {}  # slice index -> (L, T, C) encoder features
        pixel_cache: dict[int, torch.Tensor] = {}  # slice index -> (3, H, W), only with a refinement head
        next_to_encode = 0
        for start in range(0, depth, self.batch_size):
            if cancel is not None:
                cancel.check()
            centres = np.arange(start, min(depth, start + self.batch_size))
            needed_until = min(depth - 1, int(centres[-1]) + half)
            while next_to_encode <= needed_until:  # encode ahead in full batches
                idx = np.arange(next_to_encode, min(depth, next_to_encode + self.batch_size))
                t0 = time.perf_counter()
                pixels = self.codec.encode(read_slices(idx))
                t1 = time.perf_counter()
                with self._autocast():
                    features = model.encode_images(pixels)  # (n, L, T, C)
                for z, feat in zip(idx.tolist(), features):
                    cache[z] = feat
                if model.refine is not None:
                    pixel_cache.update(zip(idx.tolist(), pixels))
                stats.seconds["preprocess"] += t1 - t0
                stats.seconds["encode"] += time.perf_counter() - t1
                stats.slices_encoded += len(idx)
                next_to_encode += len(idx)
            stats.peak_cached_slices = max(stats.peak_cached_slices, len(cache))
            window = torch.stack([torch.stack([cache[z] for z in window_indices(int(c), depth, context)])
                                  for c in centres])  # (B, S, L, T, C)
            image = None
            if model.refine is not None:
                with self._autocast():
                    image = model.image_features(torch.stack([pixel_cache.pop(int(c)) for c in centres]))
            yield centres, window, image
            for z in [z for z in cache if z < int(centres[-1]) + 1 - half]:  # no later window needs them
                del cache[z]
            if progress is not None:
                progress.update(stage, int(centres[-1]) + 1, depth)

    def _fuse_decode(self, window: torch.Tensor, text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """(B, S, L, T, C) windows -> (B, K, S, S) logits: adapter once per slice, decoder per prompt."""
        t0 = time.perf_counter()
        with self._autocast():
            fused = self.model.fuse(window)  # (B, L, T, C)
        t1 = time.perf_counter()
        b, k = fused.shape[0], text.shape[0]
        items = torch.stack([torch.arange(b, device=fused.device).repeat_interleave(k),
                             torch.arange(k, device=fused.device).repeat(b)], dim=1)  # (B*K, 2), slice-major
        with self._autocast():
            logits = self.model.decode(fused, text.to(fused.dtype), image, items)  # (B*K, S, S)
        self.stats.windows_fused += b
        self.stats.decoder_items += b * k
        self.stats.seconds["fuse"] += t1 - t0
        self.stats.seconds["decode"] += time.perf_counter() - t1
        return logits.float().view(b, k, *logits.shape[-2:])

    @torch.inference_mode()
    def run(
        self,
        read_slices: SliceReader,
        depth: int,
        text: torch.Tensor,
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
        stage: str = "segment",
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yields ``(centres, logits)`` per batch of centre slices, in order.

        ``logits``: (B, K, S, S) model-resolution logits (float32, on the engine's device) for the
        B centre slices and the K rows of ``text``.
        """
        for centres, window, image in self._windows(read_slices, depth, progress, cancel, stage):
            yield centres, self._fuse_decode(window, text, image)

    @torch.inference_mode()
    def run_monte_carlo(
        self,
        read_slices: SliceReader,
        depth: int,
        text: torch.Tensor,
        samples: int,
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
        stage: str = "segment",
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """Yields ``(centres, mean_probability, mutual_information)``, each (B, K, S, S).

        N stochastic passes of adapter + decoder per slice on the cached encoder tokens (never N
        encoder passes). ``mutual_information`` = H(mean p) - mean H(p): the part of the predictive
        entropy due to disagreement between samples (zero where they all agree).
        """
        if self.model.adapter is None:
            from ..errors import InputError

            raise InputError("uncertainty needs a T-Gated checkpoint: the slice-wise baseline has no stochastic layers",
                             "Use a checkpoint with the temporal adapter, or run without --uncertainty.")
        samples = max(1, int(samples))
        for centres, window, image in self._windows(read_slices, depth, progress, cancel, stage):
            mean_p = expected_h = None
            with self.model.adapter.stochastic():
                for _ in range(samples):
                    if cancel is not None:
                        cancel.check()
                    p = torch.sigmoid(self._fuse_decode(window, text, image))
                    h = binary_entropy(p)
                    mean_p = p if mean_p is None else mean_p + p
                    expected_h = h if expected_h is None else expected_h + h
            mean_p, expected_h = mean_p / samples, expected_h / samples
            yield centres, mean_p, (binary_entropy(mean_p) - expected_h).clamp_(min=0.0)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) in nats, 0 at p in {0, 1}, log 2 at p = 0.5."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log(p) + (1 - p) * torch.log1p(-p))
