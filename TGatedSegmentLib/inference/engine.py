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
from .precision import INT8_MIN_SLICES, autocast_dtype, quantize_int8
from .volume_cache import VolumeCache

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
    seconds: dict = field(
        default_factory=lambda: {"preprocess": 0.0, "encode": 0.0, "fuse": 0.0, "decode": 0.0, "text": 0.0}
    )


def window_indices(centre: int, depth: int, context: int) -> list[int]:
    """Slice indices of the window around ``centre``, edges replicated."""
    half = context // 2
    return [min(max(centre + offset, 0), depth - 1) for offset in range(-half, half + 1)]


class StreamingEngine:
    """Runs a :class:`TGatedCLIPSeg` over a volume slice by slice.

    ``precision`` (:mod:`.precision`, already resolved): ``fp32``; ``bf16``/``fp16`` run the model
    under autocast; ``int8`` quantises the model's linear layers in place before the first volume
    of at least ``INT8_MIN_SLICES`` slices. Everything returned is float32 either way. ``amp`` is
    the older name of the autocast choices (``fp16``/``bf16``, CUDA only).
    """

    def __init__(
        self,
        model: TGatedCLIPSeg,
        tokenizer,
        codec: SliceCodec,
        batch_size: int = 4,
        amp: str | None = None,
        text_cache_size: int = 256,
        precision: str = "fp32",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self.batch_size = max(1, int(batch_size))
        self.device = codec.device
        if amp and precision == "fp32":
            precision = amp if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.amp_dtype = autocast_dtype(precision)
        self.quantized = False
        self.volume_cache: VolumeCache | None = None  # set by the warm backend; bound per volume by the caller
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache_size = text_cache_size
        self.stats = EngineStats()

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def prepare(self, depth: int) -> None:
        """Before a volume of ``depth`` slices: quantise now if this precision wants it and the
        volume is deep enough to repay it (``precision.INT8_MIN_SLICES``)."""
        if self.precision == "int8" and not self.quantized and depth >= INT8_MIN_SLICES:
            start = time.perf_counter()
            quantize_int8(self.model)
            self.quantized = True
            self.stats.seconds["quantize"] = self.stats.seconds.get("quantize", 0.0) + time.perf_counter() - start

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
    def _windows(
        self,
        read_slices: SliceReader,
        depth: int,
        progress: Progress | None,
        cancel: CancelToken | None,
        stage: str,
        reuse_fused: bool = True,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor | None, torch.Tensor | None]]:
        """Yields ``(centres, window, image)`` per batch of centre slices; window: (B, S, L, T, C),
        image: the refinement head's (B, F, H, W) features of the centre slices (None without one).

        Each slice goes through the vision encoder once; only the slices some pending window still
        needs stay cached (with their model-input pixels when the refinement head needs them).
        With a bound :attr:`volume_cache`, slices it holds are not encoded again, and ``window`` is
        None where it holds the adapter output of every centre (``reuse_fused``).
        """
        self.prepare(depth)
        model, stats, kept = self.model, self.stats, self.volume_cache
        context = model.context_size
        half = context // 2
        cache: dict[int, torch.Tensor] = {}  # slice index -> (L, T, C) encoder features
        pixel_cache: dict[int, torch.Tensor] = {}  # slice index -> (3, H, W), only with a refinement head
        next_to_encode = 0
        for start in range(0, depth, self.batch_size):
            if cancel is not None:
                cancel.check()
            centres = np.arange(start, min(depth, start + self.batch_size))
            need_window = not (
                reuse_fused
                and kept is not None
                and model.temporal
                and all(int(c) in kept.fused_last and int(c) in kept.tokens for c in centres)
            )
            ahead = half if need_window else model.refine_window // 2  # the refinement head's window
            needed_until = min(depth - 1, int(centres[-1]) + ahead)
            while next_to_encode <= needed_until:  # encode ahead in full batches
                idx = np.arange(next_to_encode, min(depth, next_to_encode + self.batch_size))
                self._encode(idx, read_slices, cache, pixel_cache)
                next_to_encode += len(idx)
            stats.peak_cached_slices = max(stats.peak_cached_slices, len(cache))
            window = None
            if need_window:
                window = torch.stack(
                    [torch.stack([cache[z] for z in window_indices(int(c), depth, context)]) for c in centres]
                )  # (B, S, L, T, C)
            image = None
            if model.refine is not None:
                with self._autocast():
                    image = model.image_features(*self._refine_input(centres, depth, pixel_cache))
            yield centres, window, image
            for z in [z for z in cache if z < int(centres[-1]) + 1 - half]:  # no later window needs them
                del cache[z]
            for z in [z for z in pixel_cache if z < int(centres[-1]) + 1 - model.refine_window // 2]:
                del pixel_cache[z]
            if progress is not None:
                progress.update(stage, int(centres[-1]) + 1, depth)

    def _refine_input(self, centres: np.ndarray, depth: int, pixel_cache: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The refinement head's input: the distinct slices its windows read, (U, 3, H, W), and each
        centre's rows of them, (B, w) (edges replicated, as the adapter's window)."""
        windows = [window_indices(int(c), depth, self.model.refine_window) for c in centres]
        distinct = sorted({z for window in windows for z in window})
        row = {z: i for i, z in enumerate(distinct)}
        rows = torch.tensor([[row[z] for z in window] for window in windows], device=self.device)
        return torch.stack([pixel_cache[z] for z in distinct]), rows

    def _encode(self, idx: np.ndarray, read_slices: SliceReader, cache: dict, pixel_cache: dict) -> None:
        """Encoder features (and, with a refinement head, pixels) of slices ``idx`` into the window's
        caches: from the volume cache where it holds them, else encoded as one batch."""
        model, stats, kept = self.model, self.stats, self.volume_cache
        refine = model.refine is not None
        todo = [z for z in idx.tolist() if kept is None or z not in kept.tokens or (refine and z not in kept.pixels)]
        for z in idx.tolist():
            if z not in todo:
                cache[z] = kept.tokens[z]
                if refine:
                    pixel_cache[z] = kept.pixels[z]
                kept.hits += 1
        if not todo:
            return
        t0 = time.perf_counter()
        pixels = self.codec.encode(read_slices(np.asarray(todo)))
        t1 = time.perf_counter()
        with self._autocast():
            features = model.encode_images(pixels)  # (n, L, T, C)
        for z, feat, pix in zip(todo, features, pixels):
            cache[z] = feat
            if refine:
                pixel_cache[z] = pix
            if kept is not None:
                kept.put(kept.tokens, z, feat)
                if refine:
                    kept.put(kept.pixels, z, pix)
        stats.seconds["preprocess"] += t1 - t0
        stats.seconds["encode"] += time.perf_counter() - t1
        stats.slices_encoded += len(todo)

    def _fuse(self, centres: np.ndarray, window: torch.Tensor | None, keep: bool = True) -> torch.Tensor:
        """(B, L, T, C) decoder input of the centre slices: the adapter over their windows, or what
        the volume cache kept of it (only the last activation is the adapter's; see volume_cache).
        ``keep``: store the adapter's output in the volume cache (not for stochastic passes)."""
        kept, model = self.volume_cache if keep else None, self.model
        if window is None:
            last = model.num_activations - 1
            return torch.stack(
                [torch.cat([kept.tokens[int(c)][:last], kept.fused_last[int(c)][None]]) for c in centres]
            )
        with self._autocast():
            fused = model.fuse(window)  # (B, L, T, C)
        self.stats.windows_fused += len(centres)
        if kept is not None and model.temporal:
            for c, f in zip(centres.tolist(), fused):
                kept.put(kept.fused_last, c, f[-1])
        return fused

    def _fuse_decode(
        self,
        centres: np.ndarray,
        window: torch.Tensor | None,
        text: torch.Tensor,
        image: torch.Tensor | None,
        reuse_fused: bool = True,
    ) -> torch.Tensor:
        """(B, S, L, T, C) windows -> (B, K, S, S) logits: adapter once per slice, decoder per prompt."""
        t0 = time.perf_counter()
        fused = self._fuse(centres, window, keep=reuse_fused)
        t1 = time.perf_counter()
        b, k = fused.shape[0], text.shape[0]
        items = torch.stack(
            [torch.arange(b, device=fused.device).repeat_interleave(k), torch.arange(k, device=fused.device).repeat(b)],
            dim=1,
        )  # (B*K, 2), slice-major
        with self._autocast():
            logits = self.model.decode(fused, text.to(fused.dtype), image, items)  # (B*K, S, S)
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
            yield centres, self._fuse_decode(centres, window, text, image)

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

            raise InputError(
                "uncertainty needs a T-Gated checkpoint: the slice-wise baseline has no stochastic layers",
                "Use a checkpoint with the temporal adapter, or run without --uncertainty.",
            )
        samples = max(1, int(samples))
        for centres, window, image in self._windows(read_slices, depth, progress, cancel, stage, reuse_fused=False):
            mean_p = expected_h = None
            with self.model.adapter.stochastic():
                for _ in range(samples):
                    if cancel is not None:
                        cancel.check()
                    p = torch.sigmoid(self._fuse_decode(centres, window, text, image, reuse_fused=False))
                    h = binary_entropy(p)
                    mean_p = p if mean_p is None else mean_p + p
                    expected_h = h if expected_h is None else expected_h + h
            mean_p, expected_h = mean_p / samples, expected_h / samples
            yield centres, mean_p, (binary_entropy(mean_p) - expected_h).clamp_(min=0.0)


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) in nats, 0 at p in {0, 1}, log 2 at p = 0.5."""
    p = p.clamp(1e-7, 1 - 1e-7)
    return -(p * torch.log(p) + (1 - p) * torch.log1p(-p))
