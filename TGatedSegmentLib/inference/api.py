"""Python API: load a model once, segment many volumes.

>>> seg = Segmenter("path/to/checkpoint", device="auto")
>>> result = seg.segment("ct.nii.gz", prompts="liver, left kidney")
>>> result.write("ct.seg.nrrd")

Volumes go in as a path, a SimpleITK image, a (k, j, i) array with its :class:`Geometry`, or an
already :class:`PreparedVolume` (the trainer's cached validation volumes);
results come out on exactly the input's grid. Internally every volume is turned into the canonical
LPS frame (``preprocessing/orientation.py``) so that "left kidney" means the patient's left
whatever the direction matrix, and mapped back losslessly (axis permutations and flips only).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..allocator import keep_freed_memory
from ..errors import InputError
from ..io.volume import Geometry
from ..model.checkpoint import LoadedModel, load_model
from ..preprocessing.slices import SliceCodec
from ..preprocessing.volume import PreparedVolume, prepare_volume
from ..progress import CancelToken, Progress
from ..vocabulary import Organ, resolve_prompts
from .devices import resolve_device
from .engine import EngineStats, StreamingEngine, binary_entropy
from .precision import resolve_precision, use_all_cores
from .volume_cache import VolumeCache, content_key

log = logging.getLogger(__name__)


@dataclass
class SegmentationResult:
    """Per-prompt masks (overlaps allowed), a labelmap and optional probabilities on the input grid."""

    organs: list[Organ]
    masks: np.ndarray  # (K, k, j, i) bool
    labelmap: np.ndarray  # (k, j, i): 0 background, i + 1 for organs[i]; overlaps go to the most probable
    geometry: Geometry
    probabilities: np.ndarray | None = None  # (K, k, j, i) float32
    modality: str = "ct"
    device: str = "cpu"
    threshold: float = 0.5  # the checkpoint's default, or the one the caller named
    thresholds: tuple[float, ...] = ()  # each prompt's (organs the checkpoint calibrated may differ)
    seconds: float = 0.0
    stats: EngineStats = field(default_factory=EngineStats)
    entropy: np.ndarray | None = None  # (K, k, j, i) predictive entropy H(mean p), nats; with uncertainty=N
    mutual_information: np.ndarray | None = None  # (K, k, j, i) the part due to disagreement between samples
    uncertainty: dict | None = None  # method, samples
    source: str | Path | None = None  # the input path when segment() got one: a DICOM-SEG references its series

    @property
    def combined_entropy(self) -> np.ndarray | None:
        """Per voxel, the entropy of the most uncertain prompt: where the model is unsure of anything."""
        return None if self.entropy is None else self.entropy.max(axis=0)

    def summary(self) -> list[dict]:
        voxel_ml = float(np.prod(self.geometry.spacing)) / 1000.0
        return [
            {
                "name": o.name,
                "prompt": o.prompt,
                "label": i + 1,
                "voxels": int(m.sum()),
                "volume_ml": round(float(m.sum()) * voxel_ml, 3),
                "threshold": self.thresholds[i] if self.thresholds else self.threshold,
            }
            for i, (o, m) in enumerate(zip(self.organs, self.masks))
        ]

    def write(self, path: str | Path, overwrite: bool = False, source: str | Path | None = None) -> list[Path]:
        """``.seg.nrrd`` (Slicer segmentation, overlaps kept in layers), ``.nii.gz`` + JSON label table,
        or ``.dcm`` (DICOM-SEG on ``source``, the DICOM series folder; default: the input path)."""
        from ..io.writers import write_segmentation

        return write_segmentation(
            path,
            self.masks,
            self.organs,
            self.geometry,
            labelmap=self.labelmap,
            overwrite=overwrite,
            source=source if source is not None else self.source,
        )

    def write_uncertainty(self, folder: str | Path, overwrite: bool = False) -> list[Path]:
        """One float32 volume per prompt (entropy and mutual information), the combined entropy, and
        ``uncertainty.json`` stating the method, in a folder."""
        import json

        from ..io.atomic import atomic_write_text
        from ..io.writers import write_probabilities

        if self.entropy is None:
            raise ValueError("segment(..., uncertainty=N) computes the uncertainty maps")
        names = [f"entropy {o.name}" for o in self.organs] + ["entropy combined"]
        names += [f"mutual information {o.name}" for o in self.organs]
        stack = np.concatenate([self.entropy, self.combined_entropy[None], self.mutual_information])
        written = write_probabilities(folder, stack, names, self.geometry, overwrite=overwrite)
        meta = dict(
            self.uncertainty or {},
            units="nats",
            combined="max over prompts of the predictive entropy",
            prompts=[o.name for o in self.organs],
        )
        written.append(atomic_write_text(Path(folder) / "uncertainty.json", json.dumps(meta, indent=2)))
        return written

    def write_probabilities(self, path: str | Path, overwrite: bool = False) -> list[Path]:
        from ..io.writers import write_probabilities

        if self.probabilities is None:
            raise ValueError("segment(..., return_probabilities=True) keeps the probabilities")
        return write_probabilities(
            path, self.probabilities, [o.name for o in self.organs], self.geometry, overwrite=overwrite
        )


class Segmenter:
    """A loaded model plus its streaming engine; reuse it for many volumes and prompt sets.

    ``precision``: ``auto`` (default), ``fp32``, ``int8``, ``bf16`` or ``fp16`` (:mod:`.precision`);
    ``amp`` (``fp16``/``bf16``) is its older, CUDA-only spelling. ``batch_size``: slices per encoder
    batch (default 4 on a CPU, 16 on CUDA). ``volume_cache``: keep each volume's prompt-independent
    tensors for the next request on the same volume (the warm backend; :mod:`.volume_cache`).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        amp: str | None = None,
        loaded: LoadedModel | None = None,
        precision: str | None = None,
        volume_cache: VolumeCache | None = None,
    ):
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            use_all_cores()
            keep_freed_memory()
        requested = precision
        if amp and self.device.type == "cuda" and precision in (None, "auto", "fp32"):  # the older, CUDA-only flag
            requested = amp
        self.precision = resolve_precision(requested, self.device, caller_model=loaded is not None)
        self.loaded = loaded or load_model(checkpoint, device=self.device)
        self.loaded.model.to(self.device).eval()
        self.config = self.loaded.config
        self.codec = SliceCodec(self.config.preprocessing, self.device, dtype=self.loaded.model.dtype)
        batch_size = batch_size or (16 if self.device.type == "cuda" else 4)
        self.engine = StreamingEngine(
            self.loaded.model, self.loaded.tokenizer, self.codec, batch_size=batch_size, precision=self.precision
        )
        self.engine.volume_cache = volume_cache

    @property
    def model(self):
        return self.loaded.model

    def _bind_volume_cache(self, canonical: np.ndarray) -> bool:
        """Point the volume cache at this volume (after preprocessing); True if it holds its tensors."""
        cache = self.engine.volume_cache
        if cache is None:
            return False
        key = content_key(
            canonical,
            self.config.preprocessing.to_dict(),
            self.engine.quantized,
            str(self.device),
            self.precision,
            id(self.model),
        )
        held = cache.bind(key)
        cache.hits = 0  # counted per request
        return held

    def segment(
        self,
        volume,
        prompts: str | list | None = None,
        preset: str | None = None,
        geometry: Geometry | None = None,
        modality: str = "auto",
        threshold: float | None = None,
        return_probabilities: bool = False,
        uncertainty: int = 0,
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
        probability_sink: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> SegmentationResult:
        """Segment one volume. ``uncertainty=N`` averages N stochastic adapter+decoder passes per
        slice (the encoder still runs once per slice) and adds entropy maps to the result.

        ``threshold``: one for every prompt; None: the checkpoint's (its calibrated per-organ
        thresholds where it has them, ``TGatedConfig.thresholds_for``). ``probability_sink(z0, z1,
        prob)`` sees each block of probabilities as computed, (B, K, Y, X) for the canonical slices
        z0..z1-1 (the trainer's threshold calibration counts them there, without a volume of them)."""
        start = time.perf_counter()
        self.engine.stats = EngineStats()
        organs = resolve_prompts(prompts, preset)
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise InputError(f"threshold {threshold} is outside (0, 1)", "Use a probability such as 0.5.")
        thresholds = self.config.thresholds_for(organs) if threshold is None else [float(threshold)] * len(organs)
        threshold = self.config.threshold if threshold is None else float(threshold)
        prepared = (
            volume
            if isinstance(volume, PreparedVolume)
            else prepare_volume(volume, self.config.preprocessing, modality, geometry)
        )
        canonical, geometry, modality = prepared.unit, prepared.geometry, prepared.modality
        depth, rows, cols = canonical.shape
        progress = progress or Progress()
        self.engine.prepare(depth)  # int8: quantise before the first volume deep enough to repay it
        cached = self._bind_volume_cache(canonical)
        progress.info(
            device=str(self.device),
            modality=modality,
            orientation=prepared.orientation,
            slices=depth,
            prompts=[o.prompt for o in organs],
            temporal=self.model.temporal,
            precision=self.precision,
            cached=cached,
            message=f"{depth} slices, {modality.upper()}, stored {prepared.orientation}, "
            f"device {self.device}, {self.precision}, {len(organs)} prompt(s)"
            + (", encoder tokens cached" if cached else ""),
        )

        k = len(organs)
        masks = np.zeros((k, depth, rows, cols), dtype=bool)
        labels = np.zeros((depth, rows, cols), dtype=np.uint8 if k < 256 else np.uint16)
        probabilities = np.zeros((k, depth, rows, cols), dtype=np.float32) if return_probabilities else None
        entropy = np.zeros((k, depth, rows, cols), dtype=np.float32) if uncertainty else None
        mutual = np.zeros_like(entropy) if uncertainty else None
        text = self.engine.text_embeddings([o.prompt for o in organs])
        read = lambda idx: canonical[idx]  # noqa: E731
        if uncertainty:
            # out of place: decode returns its input unchanged when the grid is the model's own, and
            # that is an inference-mode tensor (in-place updates outside inference mode are refused)
            batches = (
                (c, self.codec.decode(p, (rows, cols)).clamp(0, 1), self.codec.decode(mi, (rows, cols)))
                for c, p, mi in self.engine.run_monte_carlo(read, depth, text, uncertainty, progress, cancel)
            )
        else:
            batches = (
                (c, torch.sigmoid(self.codec.decode(logits, (rows, cols))), None)
                for c, logits in self.engine.run(read, depth, text, progress, cancel)
            )
        cut = torch.tensor(thresholds, dtype=torch.float32, device=self.device).view(1, k, 1, 1)
        for centres, prob, mi in batches:  # prob: (B, K, Y, X) on the canonical slice grid
            above = prob >= cut.to(prob.dtype)
            best = torch.where(above, prob, torch.full_like(prob, -1.0)).argmax(dim=1)  # most probable prompt
            label = torch.where(above.any(dim=1), best + 1, torch.zeros_like(best))
            z0, z1 = int(centres[0]), int(centres[-1]) + 1
            if probability_sink is not None:
                probability_sink(z0, z1, prob)
            masks[:, z0:z1] = above.transpose(0, 1).cpu().numpy()
            labels[z0:z1] = label.cpu().numpy()
            if probabilities is not None:
                probabilities[:, z0:z1] = prob.transpose(0, 1).cpu().numpy()
            if entropy is not None:
                entropy[:, z0:z1] = binary_entropy(prob).transpose(0, 1).cpu().numpy()
                mutual[:, z0:z1] = mi.clamp(min=0).transpose(0, 1).cpu().numpy()
        if cancel is not None:
            cancel.check()
        result = SegmentationResult(
            organs=organs,
            masks=prepared.from_canonical(masks),
            labelmap=prepared.from_canonical(labels),
            geometry=geometry,
            probabilities=None if probabilities is None else prepared.from_canonical(probabilities),
            modality=modality,
            device=str(self.device),
            threshold=threshold,
            thresholds=tuple(thresholds),
            seconds=time.perf_counter() - start,
            stats=self.engine.stats,
            entropy=None if entropy is None else prepared.from_canonical(entropy),
            mutual_information=None if mutual is None else prepared.from_canonical(mutual),
            uncertainty={"samples": int(uncertainty), "method": self.model.adapter.method} if uncertainty else None,
            source=volume if isinstance(volume, (str, Path)) else None,
        )
        log.debug("segmented %d slices x %d prompts in %.1f s", depth, k, result.seconds)
        return result
