"""Many volumes, one loaded model: plan every output first, then segment case by case and keep going.

A batch is a list of :class:`BatchCase` (input, output) planned before the model loads, so that
every output name is known, unique and checked up front. :func:`iter_batch` then segments the cases
one by one with one :class:`~.api.Segmenter`; a case that fails (corrupt file, 2D image, a series
that does not line up) becomes a ``failed`` :class:`CaseResult` with its message and hint, and the
loop goes on. Outputs are written atomically, so a failed or interrupted case leaves nothing
half-written.

>>> cases = plan_cases(["a/ct.nii.gz", "b/ct.nii.gz", "dicom/P7"], "out")   # a_ct, b_ct, P7 .seg.nrrd
>>> results = list(iter_batch(Segmenter(ckpt), cases, {"prompts": "liver"}))
>>> write_summary(results, "out/summary.json")
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import TGatedError
from ..io.atomic import atomic_write_text, split_suffixes
from ..progress import CancelToken, Progress

log = logging.getLogger(__name__)

DEFAULT_SUFFIX = ".seg.nrrd"
SUMMARY_NAME = "summary"  # reserved: the batch's own table is summary.json beside the outputs
_NO_SIDECAR = (".seg.nrrd", ".dcm")  # the labelmap formats also write NAME.json (their label table)


@dataclass(frozen=True)
class BatchCase:
    """One volume of a batch: where it is read from, where its segmentation goes, and its short name."""

    input: Path
    output: Path
    name: str

    @property
    def outputs(self) -> list[Path]:
        """Every file the case writes (a labelmap's JSON label table too): all must be free to write."""
        if self.output.name.lower().endswith(_NO_SIDECAR):
            return [self.output]
        return [self.output, self.output.with_name(self.name + ".json")]


@dataclass
class CaseResult:
    """What became of one case. ``status``: ok, failed, or cancelled (the batch stopped before it ended)."""

    case: BatchCase
    status: str
    seconds: float = 0.0  # the whole case: read, segment, write
    engine_seconds: float = 0.0  # of which Segmenter.segment (preparation and model)
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None
    kind: str | None = None  # the error's type; "internal" for what is not a user error

    @property
    def overhead_seconds(self) -> float:
        """Time beyond the engine's work: reading, checks and writing."""
        return max(self.seconds - self.engine_seconds, 0.0)

    def to_dict(self) -> dict:
        return {
            "case": self.case.name,
            "input": str(self.case.input),
            "output": str(self.case.output),
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "engine_seconds": round(self.engine_seconds, 3),
            "outputs": self.outputs,
            "error": self.error,
            "hint": self.hint,
            "kind": self.kind,
        }


# --------------------------------------------------------------------------------------------------
# Planning


def case_name(path: str | Path) -> str:
    """A DICOM series folder -> its name; ``ct.nii.gz`` -> ``ct`` (``.seg.nrrd``, ``.nii.gz`` count as one)."""
    path = Path(os.path.abspath(path))  # "." and "dir/.." get a real name; symlinks keep theirs
    if path.is_dir():
        return path.name or "volume"
    return split_suffixes(path)[0] or "volume"


def unique_names(inputs: Sequence[str | Path]) -> list[str]:
    """Output names from input names, unique ignoring case (Windows and macOS file systems do).

    Where names clash, each clashing one gets its parent folder's name in front (``a/ct.nii.gz``
    -> ``a_ct``), which is what tells patients apart in the usual ``PATIENT/ct.nii.gz`` layout;
    anything still clashing gets a number (``ct-2``). ``summary`` is kept for the batch's table.
    """
    names = [case_name(p) for p in inputs]
    counts = Counter(n.lower() for n in names)
    names = [
        f"{Path(os.path.abspath(p)).parent.name or 'root'}_{n}" if counts[n.lower()] > 1 else n
        for p, n in zip(inputs, names)
    ]
    used, unique = {SUMMARY_NAME}, []
    for name in names:
        candidate, number = name, 2
        while candidate.lower() in used:
            candidate, number = f"{name}-{number}", number + 1
        used.add(candidate.lower())
        unique.append(candidate)
    return unique


def plan_cases(inputs: Sequence[str | Path], output_dir: str | Path, suffix: str = DEFAULT_SUFFIX) -> list[BatchCase]:
    """One case per input, its output in ``output_dir`` named after the input (see :func:`unique_names`)."""
    folder = Path(output_dir)
    return [BatchCase(Path(p), folder / f"{name}{suffix}", name) for p, name in zip(inputs, unique_names(inputs))]


def existing_outputs(cases: Sequence[BatchCase], *extra: Path) -> list[Path]:
    """Outputs that are already there: the batch refuses to start over them without ``overwrite``."""
    return [p for p in [o for case in cases for o in case.outputs] + list(extra) if p.exists()]


# --------------------------------------------------------------------------------------------------
# Running


class _CaseProgress(Progress):
    """Forwards a case's progress events tagged with its number (``case``), so a reader knows whose they are."""

    def __init__(self, inner: Progress, case: int):
        super().__init__()
        self.inner, self.case = inner, case

    def update(self, stage: str, done: int, total: int, **extra) -> None:
        self.inner.update(stage, done, total, case=self.case, **extra)

    def info(self, **fields) -> None:
        self.inner.info(case=self.case, **fields)

    def emit(self, event: dict) -> None:
        self.inner.emit({**event, "case": self.case})


def run_case(
    segmenter, case: BatchCase, options: dict, overwrite: bool = False, progress: Progress | None = None
) -> CaseResult:
    """Read, segment and write one case; any failure is returned as a ``failed`` result, not raised.

    Cancellation (:class:`~..errors.Cancelled`, Ctrl-C) is not a failure of the case: it propagates.
    """
    from ..io.volume import read_image

    start = time.perf_counter()
    engine = 0.0
    try:
        image = read_image(case.input)
        if case.output.name.lower().endswith(".dcm"):
            _check_dicom_source(case.input, image)
        result = segmenter.segment(image, progress=progress, **options)
        engine = result.seconds
        written = result.write(case.output, overwrite=overwrite, source=case.input)
    except TGatedError as exc:
        return CaseResult(
            case,
            "failed",
            time.perf_counter() - start,
            engine,
            error=exc.message,
            hint=exc.hint,
            kind=type(exc).__name__,
        )
    except Exception as exc:  # noqa: BLE001 - one broken case must not cost the others
        log.debug("case %s failed", case.input, exc_info=True)
        return CaseResult(
            case,
            "failed",
            time.perf_counter() - start,
            engine,
            error=f"{type(exc).__name__}: {exc}",
            hint=_internal_hint(exc),
            kind="internal",
        )
    return CaseResult(case, "ok", time.perf_counter() - start, engine, outputs=[str(p) for p in written])


def _check_dicom_source(source: Path, image) -> None:
    """A DICOM-SEG must reference the series it segments: check that before spending model time."""
    from ..io.dicom_seg import check_alignment, source_series
    from ..io.volume import Geometry

    check_alignment(source_series(source), Geometry.from_image(image), source)


def _internal_hint(exc: BaseException) -> str:
    if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower():
        return "Use a smaller --batch-size, or --device cpu if the GPU ran out."
    return "This is a bug in TGatedSegment; run with --debug for the traceback and report it."


def iter_batch(
    segmenter,
    cases: Sequence[BatchCase],
    options: dict,
    overwrite: bool = False,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> Iterator[CaseResult]:
    """Yield one :class:`CaseResult` per case, in order, with one model for all.

    ``options`` go to :meth:`Segmenter.segment` (prompts, modality, threshold, ...). ``cancel`` is
    checked between cases, so a cancelled batch ends after the case in progress (whose output is
    complete); the cases not run are not yielded.
    """
    progress = progress or Progress()
    for index, case in enumerate(cases, start=1):
        if cancel is not None and cancel.cancelled:
            return
        progress.emit(
            {
                "event": "case",
                "status": "started",
                "case": index,
                "total": len(cases),
                "name": case.name,
                "input": str(case.input),
                "output": str(case.output),
            }
        )
        result = run_case(segmenter, case, options, overwrite, _CaseProgress(progress, index))
        progress.emit({"event": "case", **result.to_dict(), "case": index, "total": len(cases), "name": case.name})
        yield result


def write_summary(results: Sequence[CaseResult], path: str | Path, **extra) -> Path:
    """The batch's table as JSON (one row per case, counts per status), written atomically."""
    counts = Counter(r.status for r in results)
    payload = {
        "cases": [r.to_dict() for r in results],
        "ok": counts["ok"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        **extra,
    }
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
