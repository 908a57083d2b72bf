"""Slice-wise CLIPSeg vs T-Gated on the phantom: the analog of the paper's Tables 2 and 3.

    python -m benchmarks.ablation_temporal            # 3 seeds x 2 arms x the demo recipe, 4 test phantoms
    python -m benchmarks.ablation_temporal --quick    # seconds (what the test suite runs)

Both arms get identical phantoms, steps, seeds, learning rates and tiny architecture; only the
temporal adapter differs (``temporal=False`` is the slice-wise baseline). Each trained model
segments the same held-out phantoms, with every organ prompted, and is scored on per-organ Dice
and on the false positives a slice-wise model is expected to make: inside the target organ's
look-alikes (blobs identical to a slice of it that span only 1-2 slices) and in slices where an
organ is absent. Prints and writes a markdown table (mean ± std over seeds), a JSON file and a
PNG chart (``--output`` stem).
"""

from __future__ import annotations

import numpy as np

from .phantom_runs import (
    ARMS,
    DEFAULT_ARMS,
    average_dice,
    describe,
    log,
    mean_std_text,
    organ_ids,
    parse,
    phantom_image,
    report,
    trained,
    training_record,
)

ARM_TITLES = {
    "baseline": "slice-wise",
    "tgated": "T-Gated residual",
    "tgated_centre": "T-Gated, 1-slice refinement",
    "tgated_slices": "T-Gated residual, slice tokens in",
    "tgated_diff": "T-Gated residual, slice differences in",
    "tgated_centre_diff": "T-Gated, 1-slice refinement, slice differences in",
    "tgated_ctx": "T-Gated residual + context loss",
    "tgated_head": "T-Gated residual + context head",
    "tgated_head_loss": "T-Gated residual + context head and loss",
    "reference": "T-Gated authors'",
    "control": "control (5 x centre)",
    "baseline_time": "slice-wise, equal time",
}
FP_MEASURES = {  # key -> (title, organ it is measured on: "target" or "all")
    "distractors_hit_fraction": ("look-alikes hit (fraction of blobs)", "target"),
    "distractor_fp_ml": ("ml predicted inside look-alikes", "target"),
    "absent_slice_fp_ml": ("ml predicted in slices without the organ", "target"),
    "absent_slice_fp_ml_all": ("ml predicted in organ-absent slices", "all"),
}


def score(best, phantoms) -> dict:
    """Per-organ Dice and the false-positive measures, averaged over ``phantoms``."""
    from TGatedSegmentLib.evaluation.phantom import phantom_organ_measures
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.vocabulary import resolve_prompts

    segmenter = Segmenter(best, device="cpu")
    dice: dict[str, list[float]] = {}
    fp: dict[str, list[float]] = {key: [] for key in FP_MEASURES}
    for phantom in phantoms:
        ids = organ_ids(phantom)
        organs = resolve_prompts([phantom.label_names[i] for i in ids])
        result = segmenter.segment(phantom_image(phantom), prompts=organs)
        absent_all = 0.0
        for n, label in enumerate(ids):
            is_target = phantom.label_names[label] == phantom.target
            row = phantom_organ_measures(
                result.masks[n], phantom.labels, label, phantom.spacing, phantom.distractor_mask if is_target else None
            )
            dice.setdefault(phantom.label_names[label], []).append(row["dice"])
            absent_all += row["absent_slice_fp_ml"]
            if is_target:
                fp["distractors_hit_fraction"].append(row["distractors_hit"] / max(row["distractors"], 1))
                fp["distractor_fp_ml"].append(row["distractor_fp_ml"])
                fp["absent_slice_fp_ml"].append(row["absent_slice_fp_ml"])
        fp["absent_slice_fp_ml_all"].append(absent_all)
    organ_dice, mean_dice = average_dice(dice)
    return {"dice": organ_dice, "mean_dice": mean_dice, **{key: float(np.mean(v)) for key, v in fp.items()}}


def table(results: dict, organs: list[str], target: str, seeds: list[int]) -> str:
    """Per-organ Dice of every arm (mean ± std over seeds), each arm's difference to the slice-wise
    baseline (without it, to the first arm asked for), then the false positives and training times."""
    arms = [a for a in ARMS if a in results and results[a]]
    base = "baseline" if "baseline" in arms else arms[0]
    others = [a for a in arms if a != base]

    def cell(arm, get):
        return mean_std_text([get(results[arm][s]) for s in seeds])

    titles = [f"{ARM_TITLES[a]} Dice" for a in arms] + [f"{ARM_TITLES[a]} − {ARM_TITLES[base]}" for a in others]
    lines = [
        "| organ | " + " | ".join(titles) + " |",
        "|---|" + "---:|" * len(titles),
    ]  # one arm: no difference columns
    for organ in organs + ["mean"]:
        get = (lambda r: r["mean_dice"]) if organ == "mean" else (lambda r, o=organ: r["dice"][o])
        diffs = [mean_std_text([get(results[a][s]) - get(results[base][s]) for s in seeds]) for a in others]
        name = f"**{organ}** (has look-alikes)" if organ == target else ("**mean**" if organ == "mean" else organ)
        lines.append(f"| {name} | " + " | ".join([cell(a, get) for a in arms] + diffs) + " |")
    lines += [
        "",
        "| per test phantom | " + " | ".join(ARM_TITLES[a] for a in arms) + " |",
        "|---|" + "---:|" * len(arms),
    ]
    for key, (title, organ) in FP_MEASURES.items():
        who = target if organ == "target" else "all organs"
        lines.append(f"| {who}: {title} | " + " | ".join(cell(a, lambda r, k=key: r[k]) for a in arms) + " |")
    lines.append("| training steps | " + " | ".join(cell(a, lambda r: r["steps"]) for a in arms) + " |")
    lines.append("| training seconds | " + " | ".join(cell(a, lambda r: r["seconds"]) for a in arms) + " |")
    return "\n".join(lines)


def chart(results: dict, organs: list[str], target: str, seeds: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if a in results and results[a]]
    width = 0.8 / len(arms)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1.4]})
    x = np.arange(len(organs) + 1)
    for i, arm in enumerate(arms):
        values = np.array(
            [[results[arm][s]["dice"][o] for o in organs] + [results[arm][s]["mean_dice"]] for s in seeds], dtype=float
        )
        left.bar(
            x + (i - (len(arms) - 1) / 2) * width,
            np.nanmean(values, axis=0),
            width,
            yerr=np.nanstd(values, axis=0),
            label=ARM_TITLES[arm],
            capsize=2,
        )
    left.set_xticks(
        x,
        [o.replace("_", " ") + (" *" if o == target else "") for o in organs] + ["mean"],
        rotation=35,
        ha="right",
        fontsize=8,
    )
    left.set_ylabel("Dice (held-out phantoms)")
    left.set_title(f"per-organ Dice, mean ± std over {len(seeds)} seeds (* has look-alikes)", fontsize=9)
    left.legend(fontsize=7)
    keys = ["distractor_fp_ml", "absent_slice_fp_ml"]
    x = np.arange(len(keys))
    for i, arm in enumerate(arms):
        values = np.array([[results[arm][s][k] for k in keys] for s in seeds], dtype=float)
        right.bar(
            x + (i - (len(arms) - 1) / 2) * width,
            values.mean(axis=0),
            width,
            yerr=values.std(axis=0),
            label=ARM_TITLES[arm],
            capsize=2,
        )
    right.set_xticks(x, ["inside look-alikes", "slices without it"], fontsize=8)
    right.set_ylabel(f"{target} false positives (ml)")
    right.set_title(f"{target} false positives per phantom", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    args, s, phantoms = parse(__doc__, "ablation_temporal", argv)
    seeds = s["seeds"]
    target = phantoms[0].target
    organs = [phantoms[0].label_names[i] for i in organ_ids(phantoms[0])]
    arms = args.arms or list(DEFAULT_ARMS)
    results: dict = {arm: {} for arm in arms}
    for seed in seeds:
        for arm in arms:
            best = trained(s["work"], s["recipe"], seed, arm)
            results[arm][seed] = {**score(best, phantoms), **training_record(best)}
            r = results[arm][seed]
            log(
                f"  {arm} seed {seed}: mean Dice {r['mean_dice']:.3f}, {target} {r['dice'][target]:.3f}, "
                f"look-alike FP {r['distractor_fp_ml']:.2f} ml"
            )
    header = (
        f"Phantom ablation, {', '.join(ARM_TITLES[a] for a in arms)}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), "
        f"{describe(s, phantoms)}"
    )
    report(
        args.output,
        header,
        table(results, organs, target, seeds),
        s,
        phantoms,
        {"target": target, "results": results},
        lambda png: chart(results, organs, target, seeds, png),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
