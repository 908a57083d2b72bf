"""Volumetric evaluation of checkpoints on a labelled dataset: per-organ Dice, NSD and HD95.

The trainer's per-epoch validation and ``tgated evaluate`` share :func:`score_case`: whole
volumes through the streaming inference engine (:class:`Segmenter`), at the native resolution,
without augmentation, each case scored only on the organs it is annotated for
(``Dataset.scored_ids``). The empty-mask rule is :mod:`evaluation.metrics`' (both empty: not
scored; one empty: Dice 0, NSD 0, HD95 = the volume's diagonal).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from ..compat import moved_names
from ..errors import InputError
from ..io.atomic import atomic_path, atomic_write_text
from ..io.jsonfile import write_json
from ..progress import CancelToken, Progress
from ..vocabulary import Organ
from .calibration import ThresholdCounts
from .metrics import METRICS, _status, organ_metrics, summarize
from .metrics import dice as dice_score
from .worst_slices import FOLDER as WORST_FOLDER
from .worst_slices import WorstSlices

METRIC_TITLES = {"dice": "Dice", "nsd": "NSD", "hd95": "HD95 (mm)"}


class WrittenReport(NamedTuple):
    """What :meth:`EvaluationReport.write` wrote, and why a chart is missing (None: nothing is)."""

    files: list[Path]
    note: str | None = None


@dataclass
class ScoredCase:
    """A volume to segment and its reference labels, both on the file's (k, j, i) grid.

    ``volume`` is anything :meth:`Segmenter.segment` accepts (a path, an image, or a cached
    :class:`PreparedVolume`); ``organs`` maps the label ids to score to their prompts.
    """

    case_id: str
    volume: object
    labels: np.ndarray  # (k, j, i) label ids
    spacing: tuple[float, float, float]  # (sk, sj, si) mm
    organs: dict[int, Organ]
    modality: str = "auto"


def score_case(
    segmenter,
    case: ScoredCase,
    tolerance_mm: float = 2.0,
    metrics: Sequence[str] = METRICS,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    worst=None,
    calibration: ThresholdCounts | None = None,
) -> list[dict]:
    """Segment one volume with every scored prompt and return one metrics row per organ.

    ``worst``: called with (case, organ, prepared volume, prediction, reference) per organ, e.g.
    :meth:`worst_slices.WorstSlices.collector` (the volume is then prepared here, once).
    ``calibration``: also count each organ's voxels at every threshold of its grid (the trainer's
    threshold calibration), slice block by slice block as the engine computes them.
    """
    from ..preprocessing.volume import PreparedVolume, prepare_volume

    ids = list(case.organs)
    if not ids:
        return []
    volume = case.volume
    if (worst is not None or calibration is not None) and not isinstance(volume, PreparedVolume):
        volume = prepare_volume(volume, segmenter.config.preprocessing, case.modality)
    sink = None
    if calibration is not None and isinstance(volume, PreparedVolume):  # (it is: prepared above)
        sink = calibration.sink(volume.to_canonical(case.labels), {i: case.organs[i].prompt for i in ids})
    result = segmenter.segment(
        volume,
        prompts=[case.organs[i] for i in ids],
        modality=case.modality,
        progress=progress,
        cancel=cancel,
        probability_sink=sink,
    )
    if result.masks.shape[1:] != case.labels.shape:
        raise InputError(
            f"case '{case.case_id}': the segmentation grid {result.masks.shape[1:]} differs from the "
            f"label grid {case.labels.shape}",
            "Resample the label onto the image grid.",
        )
    rows = []
    for n, label_id in enumerate(ids):
        pred, ref = result.masks[n], case.labels == label_id
        if set(metrics) <= {"dice"}:  # validation: Dice only, no surface distances
            row = {
                "status": _status(pred, ref),
                "pred_voxels": int(pred.sum()),
                "ref_voxels": int(ref.sum()),
                "dice": dice_score(pred, ref),
            }
        else:
            row = organ_metrics(pred, ref, case.spacing, tolerance_mm)
        organ = case.organs[label_id]
        if worst is not None:
            worst(case.case_id, organ.name, volume, pred, ref)
        rows.append({"case": case.case_id, "label": int(label_id), "organ": organ.name, "prompt": organ.prompt, **row})
    return rows


def dataset_cases(dataset, cases=None) -> Iterator[ScoredCase]:
    """:class:`ScoredCase` for each case of a :class:`data.dataset.Dataset`, read lazily from disk."""
    from ..io.volume import array_from_image, read_image
    from ..modality import modality_hint

    for case in cases if cases is not None else dataset.cases:
        image = read_image(case.image)
        labels = array_from_image(read_image(case.label))
        if labels.shape != tuple(image.GetSize())[::-1]:
            raise InputError(
                f"case '{case.case_id}': image size {image.GetSize()} differs from label size {labels.shape[::-1]}",
                "Resample the label onto the image grid (nearest neighbour).",
            )
        organs = {i: dataset.organs[i] for i in dataset.scored_ids(case)}
        yield ScoredCase(
            case.case_id, image, labels, tuple(image.GetSpacing())[::-1], organs, modality_hint(case.modality)
        )


def evaluate_segmenter(
    segmenter,
    cases: Iterable[ScoredCase],
    tolerance_mm: float = 2.0,
    metrics: Sequence[str] = METRICS,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    total: int | None = None,
    stage: str = "evaluate",
    worst=None,
    calibration: ThresholdCounts | None = None,
) -> list[dict]:
    """Rows of :func:`score_case` for every case; progress (``stage``) per case."""
    rows: list[dict] = []
    for n, case in enumerate(cases):
        rows.extend(
            score_case(segmenter, case, tolerance_mm, metrics, cancel=cancel, worst=worst, calibration=calibration)
        )
        if progress is not None:
            progress.update(stage, n + 1, total or n + 1, case=case.case_id)
    return rows


# --------------------------------------------------------------------------- reports


@dataclass
class EvaluationReport:
    """Rows (checkpoint, case, organ, metrics) for several checkpoints, and their summaries."""

    checkpoints: list[str]  # display names, in the order given
    sources: dict[str, str]  # name -> path / hub id
    rows: list[dict] = field(default_factory=list)
    tolerance_mm: float = 2.0
    dataset: str = ""
    worst: WorstSlices | None = None  # each checkpoint's worst slice per organ, when collected

    def summary(self, name: str) -> dict:
        return summarize(r for r in self.rows if r["checkpoint"] == name)

    @property
    def organs(self) -> list[str]:
        return list(dict.fromkeys(r["organ"] for r in self.rows))

    def to_markdown(self) -> str:
        """One table per metric: organs down (mean ± std over the cases), checkpoints across, the
        macro mean last."""
        summaries = {name: self.summary(name) for name in self.checkpoints}
        out = []
        for metric in METRICS:
            title = METRIC_TITLES[metric] + (f" @ {self.tolerance_mm:g} mm" if metric == "nsd" else "")
            out.append(f"### {title}\n")
            out.append("| organ | " + " | ".join(self.checkpoints) + " |")
            out.append("|---|" + "---:|" * len(self.checkpoints))
            for organ in self.organs:
                cells = [_fmt_spread(summaries[n]["per_organ"].get(organ, {}), metric) for n in self.checkpoints]
                out.append(f"| {organ} | " + " | ".join(cells) + " |")
            cells = [_fmt(summaries[n]["overall"].get(metric), metric) for n in self.checkpoints]
            out.append("| **mean** | " + " | ".join(f"**{c}**" for c in cells) + " |\n")
        return "\n".join(out)

    def summary_rows(self) -> list[dict]:
        rows = []
        for name in self.checkpoints:
            summary = self.summary(name)
            for organ, stats in list(summary["per_organ"].items()) + [("MEAN", summary["overall"])]:
                rows.append({"checkpoint": name, "organ": organ, **stats})
        return rows

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "tolerance_mm": self.tolerance_mm,
            "checkpoints": self.sources,
            "summary": {name: self.summary(name) for name in self.checkpoints},
            "rows": self.rows,
            "empty_mask_rule": "both empty: not scored (NaN, left out of means); one empty: Dice 0, NSD 0, "
            "HD95 = volume diagonal",
        }

    def write(self, folder: str | Path, chart: bool = True) -> WrittenReport:
        """metrics.csv (per case and organ), summary.csv, report.json, report.md, dice.png (means),
        dice_box.png (each organ's per-case Dice, one box per checkpoint) and, when collected,
        worst_slices/ORGAN.png (linked from report.md).

        Returns the written files and a note when the charts could not be drawn.
        """
        folder = Path(folder)
        overlays = self.worst.write(folder / WORST_FOLDER) if self.worst is not None else []
        markdown = self.to_markdown() + ("\n" + self.worst.markdown(overlays) if self.worst is not None else "")
        written = [
            atomic_write_text(folder / "metrics.csv", _csv(self.rows)),
            atomic_write_text(folder / "summary.csv", _csv(self.summary_rows())),
            write_json(folder / "report.json", self.to_json()),
            atomic_write_text(folder / "report.md", markdown),
            *overlays,
        ]
        note = None
        if chart:
            try:
                written.append(self.bar_chart(folder / "dice.png"))
                written.append(self.box_plot(folder / "dice_box.png"))
            except ImportError:
                note = "matplotlib is not installed: no dice.png or dice_box.png (pip install matplotlib)"
        return WrittenReport(written, note)

    def bar_chart(self, path: Path) -> Path:
        """Mean Dice per organ (and the macro mean), one bar per checkpoint."""
        organs = self.organs + ["mean"]
        fig, ax, width, plt = _organ_axes(len(organs), len(self.checkpoints), 0.7)
        for n, name in enumerate(self.checkpoints):
            summary = self.summary(name)
            values = [summary["per_organ"].get(o, {}).get("dice", math.nan) for o in self.organs]
            values.append(summary["overall"]["dice"])
            ax.bar(_offsets(len(organs), n, len(self.checkpoints), width), np.nan_to_num(values), width, label=name)
        return _save_organ_axes(fig, ax, plt, organs, "volumetric Dice", path)

    def box_plot(self, path: Path) -> Path:
        """Per organ, the per-case Dice of each checkpoint as a box (cases as dots over it)."""
        organs = self.organs
        fig, ax, width, plt = _organ_axes(len(organs), len(self.checkpoints), 0.8)
        for n, name in enumerate(self.checkpoints):
            xs = _offsets(len(organs), n, len(self.checkpoints), width)
            values = [
                [
                    float(r["dice"])
                    for r in self.rows
                    if r["checkpoint"] == name and r["organ"] == organ and not math.isnan(float(r["dice"]))
                ]
                for organ in organs
            ]
            boxes = ax.boxplot(
                [v if v else [math.nan] for v in values],
                positions=xs,
                widths=width * 0.8,
                patch_artist=True,
                showfliers=False,
            )
            for box in boxes["boxes"]:
                box.set_facecolor(f"C{n}")
                box.set_alpha(0.5)
            for x, v in zip(xs, values):
                ax.plot([x] * len(v), v, ".", color=f"C{n}", markersize=4)
            ax.plot([], [], "s", color=f"C{n}", label=name)
        return _save_organ_axes(fig, ax, plt, organs, "volumetric Dice per case", path)


def _organ_axes(n_organs: int, n_checkpoints: int, inches_per_organ: float):
    """A figure with one slot per organ, wide enough for ``n_checkpoints`` marks in each slot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = max(1, n_checkpoints)
    fig, ax = plt.subplots(figsize=(max(6.0, inches_per_organ * n_organs * count**0.5), 4.0))
    return fig, ax, 0.8 / count, plt


def _offsets(n_organs: int, index: int, n_checkpoints: int, width: float) -> np.ndarray:
    return np.arange(n_organs) + (index - (max(1, n_checkpoints) - 1) / 2) * width


def _save_organ_axes(fig, ax, plt, organs: list[str], ylabel: str, path: Path) -> Path:
    ax.set_xticks(np.arange(len(organs)), organs, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def _fmt_spread(stats: dict, metric: str) -> str:
    """ "mean ± std" over the cases (the mean alone when there is one case or none)."""
    mean, std = stats.get(metric), stats.get(f"{metric}_std")
    if stats.get("n", 0) > 1 and mean is not None and std is not None and not math.isnan(std) and not math.isnan(mean):
        return f"{_fmt(mean, metric)} ± {_fmt(std, metric)}"
    return _fmt(mean, metric)


def _fmt(value, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.1f}" if metric == "hd95" else f"{value:.3f}"


def _csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return buffer.getvalue()


def checkpoint_names(sources: Sequence[str]) -> list[str]:
    """Short unique display names: the folder name, or more of the path where two would clash."""
    names = [Path(str(s).rstrip("/")).name or str(s) for s in sources]
    if len(set(names)) < len(names):
        names = [str(s) for s in sources]
    return names


def evaluate(
    checkpoints: Sequence[str],
    data,
    tolerance_mm: float = 2.0,
    device: str = "auto",
    batch_size: int = 4,
    amp: str | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    names: Sequence[str] | None = None,
    worst_slices: bool = False,
) -> EvaluationReport:
    """Score every checkpoint on every case of ``data`` (a dataset folder or a loaded Dataset).

    ``names``: display names (default: the folder names, made unique); ``worst_slices``: also
    collect each checkpoint's worst slice per organ (the report then writes their overlays).
    """
    from ..data.dataset import Dataset, load_dataset
    from ..inference.api import Segmenter

    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    names = list(names) if names is not None else checkpoint_names(checkpoints)
    if len(names) != len(checkpoints) or len(set(names)) != len(names):
        raise InputError("evaluate needs one distinct name per checkpoint", "Pass unique names, or none.")
    report = EvaluationReport(
        names,
        dict(zip(names, map(str, checkpoints))),
        tolerance_mm=tolerance_mm,
        dataset=str(dataset.root),
        worst=WorstSlices() if worst_slices else None,
    )
    progress = progress or Progress()
    for name, source in zip(names, checkpoints):
        progress.info(message=f"evaluating {name} on {len(dataset.cases)} case(s)", checkpoint=name)
        # the reference arithmetic: a report measures the model, not a faster approximation of it
        segmenter = Segmenter(source, device=device, batch_size=batch_size, amp=amp, precision="fp32")
        rows = evaluate_segmenter(
            segmenter,
            dataset_cases(dataset),
            tolerance_mm,
            progress=progress,
            cancel=cancel,
            total=len(dataset.cases),
            worst=report.worst.collector(name) if report.worst is not None else None,
        )
        report.rows.extend({"checkpoint": name, **row} for row in rows)
        del segmenter
    return report


# The JSON-safe conversion moved down to io.jsonfile (the demo and the CLI write JSON through it too).
__getattr__ = moved_names(__name__, {"jsonable": "TGatedSegmentLib.io.jsonfile"})
