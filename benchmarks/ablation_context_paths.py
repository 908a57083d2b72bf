"""Which path carries the context? The trained T-Gated models scored with each temporal path switched off.

    python -m benchmarks.ablation_context_paths           # the T-Gated runs of ablation_temporal.py
    python -m benchmarks.ablation_context_paths --quick   # seconds (what the test suite runs)
    python -m benchmarks.ablation_context_paths --arms tgated_centre   # a head on the centre slice only

The default model reads the neighbouring slices in two places: the residual adapter
(``c + g * f(window)`` on the token grid) and the refinement head's window (the first convolution's
features of the 5 slices, mixed per pixel). After training, each is switched off at inference, the
weights unchanged: the adapter's branch (``c`` alone), the head's window (every window position reads
the centre slice, as the equal-capacity control does), and both. What then changes on the held-out
phantoms is what that path contributed; a path the trained model ignores changes nothing.
"""

from __future__ import annotations

import contextlib

from TGatedSegmentLib.model.adapter import AdapterOutput, TemporalAdapter
from TGatedSegmentLib.model.refine import RefinementHead, centre_rows

from .ablation_temporal import score
from .phantom_runs import describe, log, mean_std_text, parse, report, residual_arm, trained

VARIANTS = ("as trained", "adapter branch off", "head reads the centre only", "both off")
MEASURES = {  # key of ablation_temporal.score -> title
    "target": "look-alike target Dice",
    "mean_dice": "mean Dice",
    "distractor_fp_ml": "target ml inside look-alikes",
    "absent_slice_fp_ml_all": "all organs, ml in organ-absent slices",
}


@contextlib.contextmanager
def switched_off(adapter: bool, head: bool):
    """The adapter's branch and/or the head's window switched off in every model built meanwhile."""
    with_gate, image_features = TemporalAdapter.with_gate, RefinementHead.image_features

    def centre_tokens(self, window):
        return AdapterOutput(window[:, window.shape[1] // 2], with_gate(self, window).gate)

    def centre_pixels(self, pixel_values, rows=None):
        return image_features(self, pixel_values, None if rows is None else centre_rows(rows))

    try:
        if adapter:
            TemporalAdapter.with_gate = centre_tokens
        if head:
            RefinementHead.image_features = centre_pixels
        yield
    finally:
        TemporalAdapter.with_gate, RefinementHead.image_features = with_gate, image_features


def measures(result: dict, target: str) -> dict[str, float]:
    return {key: result["dice"][target] if key == "target" else result[key] for key in MEASURES}


def table(results: dict, seeds: list) -> str:
    lines = ["| | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS)]
    for key, title in MEASURES.items():
        cells = [mean_std_text([results[s][v][key] for s in seeds]) for v in VARIANTS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args, s, phantoms = parse(__doc__, "ablation_context_paths", argv)
    target = phantoms[0].target
    arm = residual_arm(args)
    results = {}
    for seed in s["seeds"]:
        best = trained(s["work"], s["recipe"], seed, arm)
        results[seed] = {}
        for variant, (adapter, head) in zip(VARIANTS, ((False, False), (True, False), (False, True), (True, True))):
            with switched_off(adapter, head):
                results[seed][variant] = measures(score(best, phantoms), target)
            log(f"  seed {seed}, {variant}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[seed][variant].items()))
    header = (
        f"The trained T-Gated models ({arm} arm) with each temporal path switched off at inference (mean ± std over "
        f"{len(s['seeds'])} seeds; target: {target}); {describe(s, phantoms)}"
    )
    report(args.output, header, table(results, s["seeds"]), s, phantoms, {"target": target, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
