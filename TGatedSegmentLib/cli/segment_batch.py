"""``tgated segment ... --output-dir DIR``: many volumes, one model load.

Everything that can be wrong before the model runs is checked first, for all cases at once: every
input exists (globs match, list files read), the prompts resolve, the output folder is writable and
no output (or ``summary.json``) would be replaced without ``--overwrite``. Then the model loads once
and the cases run in order; a case that fails is reported on one line and skipped. The end is a
table on stderr, the same as ``DIR/summary.json``.

Exit codes: 0 all cases written, 3 (:data:`EXIT_SOME_FAILED`) some failed, 2 none could be segmented
(1 if the failures were internal errors), 130 cancelled. The first Ctrl-C or SIGTERM stops after
the case in progress (its output is complete); a second one stops at once, and that case's output,
being written under a temporary name, is not left behind.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path
from typing import Sequence

from ..errors import EXIT_CANCELLED, EXIT_INTERNAL, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, InputError, OutputError
from .common import install_cancel

SUMMARY_FILE = "summary.json"
_GLOB_CHARS = set("*?[")
_SINGLE_ONLY = (
    ("probabilities", "--probabilities"),
    ("uncertainty", "--uncertainty"),
    ("uncertainty_output", "--uncertainty-output"),
)


# --------------------------------------------------------------------------------------------------
# Inputs


def expand_inputs(items: list[str], lists: Sequence[str] = ()) -> list[Path]:
    """Paths from positional items (paths, globs, ``@LIST``) and ``--inputs-from`` files, in order.

    Globs are expanded here (not by the shell) so that they work the same on Windows. Every
    problem (a missing path, a pattern matching nothing, a missing list) is collected and reported
    in one error, before anything is loaded. A path given twice is segmented once.
    """
    found: list[Path] = []
    problems: list[str] = []
    for item in items:
        if item.startswith("@") and len(item) > 1:
            found += _read_list(item[1:], problems)
        else:
            found += _expand(item, f"'{item}'", problems)
    for name in lists:
        found += _read_list(name, problems)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise InputError(
            f"cannot find {'an input' if len(problems) == 1 else f'{len(problems)} inputs'}: {shown}",
            "Check the paths (relative paths in a list file are read from the list's folder); "
            "quote glob patterns so that the shell leaves them to tgated.",
        )
    if not found:
        raise InputError("no input volumes given", "Pass volume files, DICOM series folders, a glob or @LIST.txt.")
    seen: set[str] = set()
    unique = []
    for path in found:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _expand(item: str, label: str, problems: list[str], base: Path | None = None) -> list[Path]:
    """``item`` as a path or, if no such path exists, a glob; relative to ``base`` (a list's folder) if given.

    A literal path wins over a pattern (a file may be called ``scan[1].nii.gz``).
    """
    path = Path(item).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    if path.exists():
        return [path]
    if _GLOB_CHARS & set(item):
        matches = sorted(glob.glob(str(path), recursive=True))
        if matches:
            return [Path(m) for m in matches]
        problems.append(f"no files match {label}")
    else:
        problems.append(f"{label} does not exist")
    return []


def _read_list(name: str, problems: list[str]) -> list[Path]:
    """One path (or glob) per line; blank lines and lines starting with ``#`` are skipped."""
    path = Path(name).expanduser()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        problems.append(f"input list '{name}' cannot be read ({exc.strerror or exc})")
        return []
    found: list[Path] = []
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            found += _expand(line, f"'{line}' (line {number} of '{name}')", problems, path.parent)
    return found


# --------------------------------------------------------------------------------------------------
# Checks before the model loads


def output_suffix(value: str | None) -> str:
    """``--output-format``: ``seg.nrrd`` or ``.seg.nrrd`` alike; argparse reports a wrong one."""
    from .segment import SEGMENTATION_SUFFIXES

    suffix = "." + (value or "seg.nrrd").strip().lower().lstrip(".")
    if suffix not in SEGMENTATION_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"unsupported output format '{value}' (choose from {', '.join(s[1:] for s in SEGMENTATION_SUFFIXES)})"
        )
    return suffix


def _refuse_single_only(args: argparse.Namespace) -> None:
    for attr, flag in _SINGLE_ONLY:
        if getattr(args, attr, None):
            raise InputError(
                f"{flag} works on one volume at a time, not with --output-dir",
                f"Leave {flag} out of the batch, or run tgated segment INPUT -o OUTPUT {flag} ... "
                "for each volume that needs it.",
            )


def _refuse_non_dicom(inputs: list[Path], suffix: str) -> None:
    """A DICOM-SEG references its series: every input must be a DICOM folder, and highdicom installed."""
    if suffix != ".dcm":
        return
    from ..io.dicom_seg import import_highdicom

    import_highdicom()
    files = [str(p) for p in inputs if not p.is_dir()]
    if files:
        raise InputError(
            f"--output-format dcm needs DICOM series folders as inputs; these are files: "
            f"{', '.join(files[:5])}{' ...' if len(files) > 5 else ''}",
            "Pass the DICOM series folders, or choose --output-format seg.nrrd or nii.gz.",
        )


def _refuse_existing(cases, summary: Path, overwrite: bool) -> None:
    from ..inference.batch import existing_outputs
    from ..io.atomic import overwrite_hint

    existing = [] if overwrite else existing_outputs(cases, summary)
    if existing:
        more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
        names = ", ".join(f"'{p}'" for p in existing[:5]) + more
        raise OutputError(
            f"{len(existing)} output file(s) already exist: {names}", overwrite_hint("--output-dir", "them")
        )


# --------------------------------------------------------------------------------------------------
# Running


def run(args: argparse.Namespace) -> int:
    from ..inference.batch import CaseResult, iter_batch, plan_cases, write_summary
    from ..io.atomic import check_writable
    from ..progress import CancelToken, make_progress
    from ..vocabulary import resolve_prompts

    _refuse_single_only(args)
    inputs = expand_inputs(args.inputs, args.inputs_from or [])
    suffix = args.output_format or output_suffix(None)
    _refuse_non_dicom(inputs, suffix)
    organs = resolve_prompts(args.prompts, args.preset)
    out_dir = Path(args.output_dir).expanduser()
    summary = out_dir / SUMMARY_FILE
    check_writable(summary)
    cases = plan_cases(inputs, out_dir, suffix)
    _refuse_existing(cases, summary, args.overwrite)
    from ..inference.api import Segmenter  # torch loads only once every case is known good

    progress = make_progress(None if args.progress == "none" else args.progress)
    token = CancelToken()
    restore = install_cancel(
        token,
        "tgated: stopping after the current case (press Ctrl-C again to stop now)",
        immediate=("SIGINT", "SIGTERM"),
    )
    results: list[CaseResult] = []
    options = {"prompts": organs, "modality": args.modality, "threshold": args.threshold}  # resolved as in single mode
    try:
        progress.update("load", 0, 1)
        segmenter = Segmenter(
            args.checkpoint, device=args.device, batch_size=args.batch_size, amp=args.amp, precision=args.precision
        )
        progress.update("load", 1, 1)
        try:
            for result in iter_batch(segmenter, cases, options, args.overwrite, progress, token):
                results.append(result)
                _report_case(args, progress, len(results), len(cases), result)
        except KeyboardInterrupt:  # the second Ctrl-C: the case in progress is dropped, nothing half-written
            token.cancel()
    finally:
        progress.close()
        restore()
    results += [CaseResult(case, "cancelled") for case in cases[len(results) :]]
    write_summary(results, summary, prompts=[o.name for o in organs], checkpoint=args.checkpoint)
    _print_table(results, summary)
    return _finish(args, progress, results, summary, token.cancelled)


def _report_case(args, progress, index: int, total: int, result) -> None:
    """One line per case on stderr: always for a failure, for a success with the tqdm display."""
    progress.close()  # a tqdm bar left open would swallow the line
    if result.status == "failed":
        hint = f" {result.hint}" if result.hint else ""
        print(
            f"tgated: case {index}/{total} '{result.case.input}' failed: {result.error.rstrip('.')}.{hint}",
            file=sys.stderr,
            flush=True,
        )
    elif args.progress == "tqdm":
        print(
            f"case {index}/{total}: wrote {result.case.output} in {result.seconds:.1f} s", file=sys.stderr, flush=True
        )


def _print_table(results, summary: Path) -> None:
    width = max([len(r.case.name) for r in results] + [4])
    lines = [f"{'case':<{width}}  {'status':<9}  {'seconds':>7}  output / error"]
    for r in results:
        detail = str(r.case.output) if r.status == "ok" else (r.error or "not run: the batch was cancelled")
        lines.append(f"{r.case.name:<{width}}  {r.status:<9}  {r.seconds:>7.2f}  {detail}")
    lines.append(f"summary: {summary}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _finish(args, progress, results, summary: Path, cancelled: bool) -> int:
    ok = sum(r.status == "ok" for r in results)
    failed = [r for r in results if r.status == "failed"]
    if args.progress == "json":
        progress.emit(
            {
                "event": "cancelled" if cancelled else "done",
                "summary": str(summary),
                "ok": ok,
                "failed": len(failed),
                "cases": [r.to_dict() for r in results],
            }
        )
    if cancelled:
        print(
            f"tgated: cancelled after {ok + len(failed)} of {len(results)} cases; "
            f"the finished ones are in {summary.parent}",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    if not failed:
        return EXIT_OK
    if ok:
        return EXIT_SOME_FAILED
    return EXIT_INTERNAL if all(r.kind == "internal" for r in failed) else EXIT_USAGE
