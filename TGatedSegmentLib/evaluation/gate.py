"""Where does the T-Gated model use its neighbouring slices? The learned gate, mapped back onto the volume.

The adapter blends, per token and channel, ``g * temporal + (1 - g) * single_slice`` with
``g = sigmoid(gate_proj(temporal))`` (paper Sec. 3.4). :func:`gate_volume` runs a model's encoder
and adapter over a whole volume exactly as inference does (the streaming engine's windows, edges
replicated) and returns the channel-mean gate of every token, spread over the pixels the token
covers, on the canonical slice grid: a volume of values in (0, 1) that can be summarised inside
any mask (:func:`gate_stats`). :class:`GateRecorder` summarises every gate value a model computes
while it runs (the trainer's validation logs it next to the losses). :func:`window_context_volume`
maps the other way context enters, the refinement head's window mix, onto the volume likewise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PERCENTILES = (10, 50, 90)


def _volume_map(segmenter, volume, modality: str, stage: str, pixels_of) -> np.ndarray:
    """(z, y, x) float32 on the canonical slice grid: the volume streamed through the engine's windows
    exactly as inference streams it (edges replicated), and for each batch of centre slices
    ``pixels_of(window)``, a (B, H, W) map at the model input size, resized onto the slices."""
    from ..preprocessing.volume import PreparedVolume, prepare_volume

    prepared = (
        volume
        if isinstance(volume, PreparedVolume)
        else prepare_volume(volume, segmenter.config.preprocessing, modality)
    )
    canonical = prepared.unit
    depth, rows, cols = canonical.shape
    out = np.zeros((depth, rows, cols), np.float32)
    for centres, window, _ in segmenter.engine._windows(lambda idx: canonical[idx], depth, None, None, stage):
        z0 = int(centres[0])
        out[z0 : z0 + len(centres)] = segmenter.codec.decode(pixels_of(window), (rows, cols)).cpu().numpy()
    return out


@torch.inference_mode()
def gate_volume(segmenter, volume, modality: str = "auto") -> np.ndarray:
    """(z, y, x) float32 channel-mean gate per canonical voxel (its token's value).

    ``segmenter``: an :class:`inference.api.Segmenter` holding a T-Gated checkpoint; ``volume``:
    anything it accepts (path, SimpleITK image, :class:`PreparedVolume`). The result is in the
    canonical frame (for an identity-direction volume such as a phantom, the array's own frame).
    """
    from ..errors import InputError

    model = segmenter.model
    if not model.temporal:
        raise InputError("the slice-wise baseline has no gate", "Pass a T-Gated checkpoint.")
    size = segmenter.config.preprocessing.image_size

    def pixels_of(window: torch.Tensor) -> torch.Tensor:
        gate = model.fuse_with_gate(window).gate  # (B, T, C), token 0 is the class token
        patches = gate[:, 1:].float().mean(dim=-1)  # (B, g*g)
        grid = int(round(math.sqrt(patches.shape[1])))
        tokens = patches.view(-1, 1, grid, grid)
        return F.interpolate(tokens, size=(size, size), mode="nearest")[:, 0]  # each pixel gets its token's gate

    gate = _volume_map(segmenter, volume, modality, "gate", pixels_of)
    return np.clip(gate, 0, 1, out=gate)  # the resize may overshoot (0, 1) a little


@torch.inference_mode()
def window_context_volume(segmenter, volume, modality: str = "auto") -> np.ndarray:
    """(z, y, x) float32: per canonical voxel, how much the neighbouring slices change the
    refinement head's image features there: the channel L2 norm of what its window mix adds to the
    centre slice's features.

    In the models the ``cpu`` recipe trains, that mix (not the gated token branch) is where context
    reaches the prediction (``benchmarks/results/ablation_context_paths.md``), so this map, not the
    gate, says where a model uses its neighbours. Same frame and arguments as :func:`gate_volume`.
    """
    from ..errors import InputError

    mix = getattr(segmenter.model.refine, "image_window", None)
    if mix is None:
        raise InputError(
            "this model's refinement head reads the centre slice only", "Pass a checkpoint whose head reads a window."
        )
    added: list[torch.Tensor] = []  # (B, H, W) per batch: the engine runs the head before yielding the batch
    handle = mix.register_forward_hook(lambda module, inputs, output: added.append(output.float().norm(dim=1)))
    try:
        return _volume_map(segmenter, volume, modality, "context", lambda window: added.pop())
    finally:
        handle.remove()


def gate_stats(gate: np.ndarray, mask: np.ndarray) -> dict:
    """Mean, 10/50/90th percentiles and voxel count of ``gate`` inside ``mask`` (NaN when empty)."""
    return value_stats(np.asarray(gate)[np.asarray(mask, bool)])


def value_stats(values: np.ndarray) -> dict:
    """Mean, 10/50/90th percentiles and count of ``values`` (NaN when empty): a map's summary in a region."""
    values = np.asarray(values)
    if values.size == 0:
        return {"voxels": 0, "mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}}
    q = np.percentile(values, PERCENTILES)
    return {
        "voxels": int(values.size),
        "mean": float(values.mean()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, q)},
    }


class GateRecorder:
    """Mean and percentiles of every gate value (token x channel) the adapter computes inside ``with``.

    A forward hook on the adapter's ``gate_proj`` sees the gate's logits (the gate is their sigmoid,
    ``TemporalAdapter.gate``), so the engine runs unchanged. Values go into a fixed histogram over
    (0, 1): memory stays constant however many volumes pass, and percentiles are exact to 1 / BINS.
    A model without an adapter (the slice-wise baseline) records nothing and summarises to ``{}``.
    Ranks of a distributed run combine their :meth:`state` with :meth:`summarize`.
    """

    BINS = 10_000

    def __init__(self, model):
        self.adapter = getattr(model, "adapter", None)
        self.histogram = torch.zeros(self.BINS, dtype=torch.float64)
        self.total, self.count = 0.0, 0
        self._handle = None

    def __enter__(self) -> "GateRecorder":
        if self.adapter is not None:
            self._handle = self.adapter.gate_proj.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _record(self, module, inputs, logits) -> None:
        gate = torch.sigmoid(logits.detach().float())
        self.histogram += torch.histc(gate, bins=self.BINS, min=0.0, max=1.0).to("cpu", torch.float64)
        self.total += float(gate.sum(dtype=torch.float64))
        self.count += gate.numel()

    def state(self) -> tuple:
        return self.histogram.numpy(), self.total, self.count

    @classmethod
    def summarize(cls, states) -> dict:
        """``{"mean", "p10", "p50", "p90"}`` over the states of :meth:`state` (``{}`` when nothing ran)."""
        states = list(states)
        count = sum(s[2] for s in states)
        if not count:
            return {}
        cumulative = np.cumsum(np.sum([s[0] for s in states], axis=0))
        edges = np.linspace(0.0, 1.0, cls.BINS + 1)
        out = {"mean": sum(s[1] for s in states) / count}
        for p in PERCENTILES:  # the upper edge of the bin where the cumulative count reaches p %
            index = min(int(np.searchsorted(cumulative, p / 100.0 * cumulative[-1])), cls.BINS - 1)
            out[f"p{p}"] = float(edges[index + 1])
        return out
