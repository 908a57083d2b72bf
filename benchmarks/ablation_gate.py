"""Where does the learned gate open? Gate values per organ, on look-alikes and elsewhere, after phantom training.

    python -m benchmarks.ablation_gate            # the T-Gated runs of ablation_temporal.py (trained if missing)
    python -m benchmarks.ablation_gate --quick    # seconds (what the test suite runs)
    python -m benchmarks.ablation_gate --arms tgated_centre   # a refinement head on the centre slice only

The residual adapter (the ``tgated`` arm) adds ``g * f(window)`` to the single-slice tokens per token
and channel; the gate starts at sigmoid(0) = 0.5 with ``f`` at zero (the adapter begins as the
slice-wise model), and training is expected to open it where the neighbouring slices help and close
it elsewhere. (The authors' wiring blends ``g * temporal + (1 - g) * single_slice`` from sigmoid(-5).)
For each seed's T-Gated model and each held-out phantom this maps the channel-mean gate of every
token onto the voxels it covers (:func:`TGatedSegmentLib.evaluation.gate.gate_volume`) and summarises
it inside each organ, inside the target's look-alikes, in the rest of the body and in the air around
it. For a model whose refinement head reads a window (the ``cpu`` recipe's), it does the same with
what the head's window mix adds to the centre slice's image features
(:func:`TGatedSegmentLib.evaluation.gate.window_context_volume`): the path that carries the context
in those models (``ablation_context_paths.py``). Prints and writes markdown tables and a PNG chart
(``--output`` stem).
"""

from __future__ import annotations

import math

import numpy as np

from TGatedSegmentLib.model.configuration import AdapterConfig

from .phantom_runs import describe, log, mean_std_text, organ_ids, parse, phantom_image, report, residual_arm, trained

INITIAL_GATE = 1.0 / (1.0 + math.exp(-AdapterConfig(mode="residual").gate_bias_init))  # the tgated arm's
BODY_HU = -500.0  # voxels above this and outside every label and look-alike are "other body tissue"


def regions(phantom) -> dict[str, np.ndarray]:
    """name -> boolean mask (z, y, x) on the phantom's grid (its canonical frame: identity direction)."""
    out = {
        phantom.label_names[i]
        + (" (has look-alikes)" if phantom.label_names[i] == phantom.target else ""): phantom.labels == i
        for i in organ_ids(phantom)
    }
    out[f"{phantom.target} look-alikes"] = phantom.distractor_mask
    labelled = (phantom.labels > 0) | phantom.distractor_mask
    out["other body tissue"] = (phantom.image > BODY_HU) & ~labelled
    out["air outside the body"] = (phantom.image <= BODY_HU) & ~labelled
    return out


def _pooled(parts: list[np.ndarray]) -> dict:
    """Voxel count, mean and percentiles of the concatenated ``parts`` (NaN when empty)."""
    from TGatedSegmentLib.evaluation.gate import value_stats

    return value_stats(np.concatenate(parts))


def score(best, phantoms) -> tuple[dict, dict]:
    """region -> gate statistics pooled over ``phantoms`` (voxel-weighted mean, percentiles), and
    region -> the same of the window head's neighbour contribution (empty for a head that reads the
    centre slice only)."""
    from TGatedSegmentLib.evaluation.gate import gate_volume, window_context_volume
    from TGatedSegmentLib.inference.api import Segmenter

    segmenter = Segmenter(best, device="cpu")
    windowed = getattr(segmenter.model.refine, "image_window", None) is not None
    gates: dict[str, list[np.ndarray]] = {}
    contexts: dict[str, list[np.ndarray]] = {}
    for phantom in phantoms:
        image = phantom_image(phantom)
        gate = gate_volume(segmenter, image)
        context = window_context_volume(segmenter, image) if windowed else None
        for name, mask in regions(phantom).items():
            gates.setdefault(name, []).append(gate[mask])
            if context is not None:
                contexts.setdefault(name, []).append(context[mask])
    return {name: _pooled(parts) for name, parts in gates.items()}, {
        name: _pooled(parts) for name, parts in contexts.items()
    }


def table(results: dict, names: list[str], seeds: list[int]) -> str:
    lines = ["| region | mean gate | 10th pct | median | 90th pct |", "|---|---:|---:|---:|---:|"]
    for name in names:
        cells = [mean_std_text([results[s][name][key] for s in seeds], 4) for key in ("mean", "p10", "p50", "p90")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def context_table(contexts: dict, names: list[str], seeds: list[int]) -> str:
    """The window head's neighbour contribution by region, and as a multiple of other body tissue's."""
    reference = "other body tissue"
    lines = [
        "| region | mean window contribution | 90th pct | x other body tissue (mean) |",
        "|---|---:|---:|---:|",
    ]
    for name in names:
        per_seed = [contexts[s][name] for s in seeds]
        ratio = [r["mean"] / contexts[s][reference]["mean"] for r, s in zip(per_seed, seeds)]
        cells = [mean_std_text([r[key] for r in per_seed], 3) for key in ("mean", "p90")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean_std_text(ratio, 2)} |")
    return "\n".join(lines)


def chart(results: dict, names: list[str], seeds: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([[results[s][n]["mean"] for n in names] for s in seeds], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    ax.bar(x, np.nanmean(values, axis=0), 0.6, yerr=np.nanstd(values, axis=0), capsize=2, color="#4C72B0")
    ax.axhline(INITIAL_GATE, color="k", lw=0.8, ls="--", label=f"initial gate {INITIAL_GATE:.4f}")
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("mean gate (channel mean per token)")
    ax.set_title(f"learned gate by region, mean ± std over {len(seeds)} seeds", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args, s, phantoms = parse(__doc__, "ablation_gate", argv)
    arm = residual_arm(args)  # --arms tgated_centre: the adapter as the only context path
    names = list(regions(phantoms[0]))
    results, contexts = {}, {}
    for seed in s["seeds"]:
        results[seed], contexts[seed] = score(trained(s["work"], s["recipe"], seed, arm), phantoms)
        log(f"  seed {seed}: mean gate " + ", ".join(f"{n} {results[seed][n]['mean']:.4f}" for n in names[-3:]))
    header = (
        f"Learned gate of the T-Gated model ({arm} arm) by region (mean ± std over {len(s['seeds'])} seeds; initial value "
        f"{INITIAL_GATE:.4f}); {describe(s, phantoms)}"
    )
    text = table(results, names, s["seeds"])
    if all(contexts[seed] for seed in s["seeds"]):
        text += (
            "\n\nWhere the neighbouring slices change the refinement head's image features: the channel L2 norm"
            " of what its window mix adds to the centre slice's features, per voxel (mean ± std over seeds;"
            " `TGatedSegmentLib.evaluation.gate.window_context_volume`):\n\n"
            + context_table(contexts, names, s["seeds"])
        )
    report(
        args.output,
        header,
        text,
        s,
        phantoms,
        {"initial_gate": INITIAL_GATE, "results": results, "window_context": contexts},
        lambda png: chart(results, names, s["seeds"], png),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
