"""How a volume becomes model input: the settings every checkpoint records (``"preprocessing"``).

They belong to preprocessing, not to the model: the slice codec, intensity normalisation and the
training cache read them without knowing about CLIPSeg. ``model.configuration`` re-exports
:class:`PreprocessConfig` because a checkpoint's config holds one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class PreprocessConfig:
    """How a volume becomes model input. Recorded in every checkpoint so inference matches training.

    ``slice_layout`` names the patient directions that the rows and the columns of a model input
    slice run towards, in the canonical LPS volume (see ``preprocessing/orientation.py``):
    ``("P", "L")`` is the radiological axial view (anterior at the top, patient's right on the
    left of the image); ``("L", "P")`` is its transpose, which is what the authors' code fed when it
    took ``nifti_array[:, :, z]`` from a volume stored in LPS order.
    """

    image_size: int = 352
    # tuples of any length to the type checker: __post_init__ turns JSON lists into tuples and checks them
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # 3 values
    std: tuple[float, ...] = (0.229, 0.224, 0.225)  # 3 values
    ct_window: tuple[float, ...] = (-125.0, 275.0)  # (low, high) HU
    mr_percentiles: tuple[float, ...] = (1.0, 99.0)  # (low, high)
    quantize_8bit: bool = True  # the CLIPSeg processor (and the authors) saw 8-bit grey images
    slice_layout: tuple[str, ...] = ("P", "L")  # 2 directions

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        self.ct_window, self.mr_percentiles = tuple(self.ct_window), tuple(self.mr_percentiles)
        self.slice_layout = tuple(s.upper() for s in self.slice_layout)
        axes = {d: a for a, pair in enumerate(("LR", "PA")) for d in pair}
        if (
            len(self.slice_layout) != 2
            or any(d not in axes for d in self.slice_layout)
            or (axes[self.slice_layout[0]] == axes[self.slice_layout[1]])
        ):
            raise ValueError(
                f"slice_layout must name one left/right and one anterior/posterior direction, got {self.slice_layout}"
            )

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
