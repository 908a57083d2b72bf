"""Where does the learned gate open? Gate values per organ, on look-alikes and elsewhere, after phantom training.

    python -m benchmarks.ablation_gate            # the T-Gated runs of ablation_temporal.py (trained if missing)
    python -m benchmarks.ablation_gate --quick    # seconds (what the test suite runs)

The residual adapter (the ``tgated`` arm) adds ``g * f(window)`` to the single-slice tokens per token
and channel; the gate starts at sigmoid(0) = 0.5 with ``f`` at zero (the adapter begins as the
slice-wise model), and training is expected to open it where the neighbouring slices help and close
it elsewhere. (The authors' wiring blends ``g * temporal + (1 - g) * single_slice`` from sigmoid(-5).)
For each seed's T-Gated model and each held-out phantom this maps the channel-mean gate of every
token onto the voxels it covers (:func:`TGatedSegmentLib.evaluation.gate.gate_volume`) and summarises
it inside each organ, inside the target's look-alikes, in the rest of the body and in the air around
it. Prints and writes a markdown table and a PNG chart (``--output`` stem).
"""

from __future__ import annotations

import math

import numpy as np

from TGatedSegmentLib.model.configuration import AdapterConfig

from .phantom_runs import describe, log, mean_std_text, organ_ids, parse, phantom_image, report, trained

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


def score(best, phantoms) -> dict:
    """region -> gate statistics pooled over ``phantoms`` (voxel-weighted mean, percentiles)."""
    from TGatedSegmentLib.evaluation.gate import PERCENTILES, gate_volume
    from TGatedSegmentLib.inference.api import Segmenter

    segmenter = Segmenter(best, device="cpu")
    pooled: dict[str, list[np.ndarray]] = {}
    for phantom in phantoms:
        gate = gate_volume(segmenter, phantom_image(phantom))
        for name, mask in regions(phantom).items():
            pooled.setdefault(name, []).append(gate[mask])
    out = {}
    for name, parts in pooled.items():
        values = np.concatenate(parts)
        if values.size == 0:
            out[name] = {"voxels": 0, "mean": math.nan, **{f"p{p}": math.nan for p in PERCENTILES}}
            continue
        q = np.percentile(values, PERCENTILES)
        out[name] = {
            "voxels": int(values.size),
            "mean": float(values.mean()),
            **{f"p{p}": float(v) for p, v in zip(PERCENTILES, q)},
        }
    return out


def table(results: dict, names: list[str], seeds: list[int]) -> str:
    lines = ["| region | mean gate | 10th pct | median | 90th pct |", "|---|---:|---:|---:|---:|"]
    for name in names:
        cells = [mean_std_text([results[s][name][key] for s in seeds], 4) for key in ("mean", "p10", "p50", "p90")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
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
    names = list(regions(phantoms[0]))
    results = {}
    for seed in s["seeds"]:
        results[seed] = score(trained(s["work"], s["recipe"], seed, "tgated"), phantoms)
        log(f"  seed {seed}: mean gate " + ", ".join(f"{n} {results[seed][n]['mean']:.4f}" for n in names[-3:]))
    header = (
        f"Learned gate of the T-Gated model by region (mean ± std over {len(s['seeds'])} seeds; initial value "
        f"{INITIAL_GATE:.4f}); {describe(s, phantoms)}"
    )
    report(
        args.output,
        header,
        table(results, names, s["seeds"]),
        s,
        phantoms,
        {"initial_gate": INITIAL_GATE, "results": results},
        lambda png: chart(results, names, s["seeds"], png),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
