"""Does the T-Gated model read its prompt? Correct, blank and wrong prompts on the phantom (the paper's Table 4 analog).

    python -m benchmarks.ablation_prompt            # the T-Gated runs of ablation_temporal.py (trained if missing)
    python -m benchmarks.ablation_prompt --quick    # seconds (what the test suite runs)

Every organ of the held-out phantoms is segmented three times by each seed's T-Gated model and
scored against that organ's reference: with its own prompt ("liver"), with a blank prompt (the
text encoder sees only its start and end tokens) and with a wrong organ's prompt (organ i gets
the prompt of organ i+1 of the list, so every wrong prompt names a real, different organ). A model
that ignores its text would score the same in all three rows.
"""

from __future__ import annotations

from .phantom_runs import average_dice, describe, log, mean_std_text, organ_ids, parse, phantom_image, report, trained

CONDITIONS = {"correct": "its own prompt", "blank": "blank prompt", "wrong": "another organ's prompt"}


def prompts_for(organs, condition: str):
    """The Organ list whose i-th prompt is used for the i-th organ under ``condition``."""
    from dataclasses import replace

    if condition == "correct":
        return list(organs)
    if condition == "blank":  # one blank prompt serves every organ
        return [replace(organs[0], name="(blank)", prompt="")]
    shifted = organs[1:] + organs[:1]
    return [replace(o, name=f"{organ.name} <- '{o.prompt}'") for organ, o in zip(organs, shifted)]


def score(best, phantoms) -> dict:
    """condition -> organ -> Dice of that organ's mask under that condition, averaged over phantoms."""
    from TGatedSegmentLib.evaluation.metrics import dice
    from TGatedSegmentLib.inference.api import Segmenter
    from TGatedSegmentLib.vocabulary import resolve_prompts

    segmenter = Segmenter(best, device="cpu")
    scores: dict[str, dict[str, list[float]]] = {c: {} for c in CONDITIONS}
    for phantom in phantoms:
        ids = organ_ids(phantom)
        organs = resolve_prompts([phantom.label_names[i] for i in ids])
        image = phantom_image(phantom)
        for condition in CONDITIONS:
            used = prompts_for(organs, condition)
            result = segmenter.segment(image, prompts=used)
            for n, label in enumerate(ids):
                mask = result.masks[0 if condition == "blank" else n]
                scores[condition].setdefault(phantom.label_names[label], []).append(dice(mask, phantom.labels == label))
    out = {}
    for condition, organ_scores in scores.items():
        per_organ, mean_dice = average_dice(organ_scores)
        out[condition] = {"dice": per_organ, "mean_dice": mean_dice}
    return out


def table(results: dict, organs: list[str], seeds: list[int]) -> str:
    lines = ["| organ | " + " | ".join(CONDITIONS.values()) + " |", "|---|" + "---:|" * len(CONDITIONS)]
    for organ in organs + ["mean"]:
        cells = []
        for condition in CONDITIONS:
            get = (
                (lambda r, c=condition: r[c]["mean_dice"])
                if organ == "mean"
                else (lambda r, c=condition, o=organ: r[c]["dice"][o])
            )
            cells.append(mean_std_text([get(results[s]) for s in seeds]))
        lines.append(f"| {'**mean**' if organ == 'mean' else organ} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args, s, phantoms = parse(__doc__, "ablation_prompt", argv)
    organs = [phantoms[0].label_names[i] for i in organ_ids(phantoms[0])]
    results = {}
    for seed in s["seeds"]:
        results[seed] = score(trained(s["work"], s["recipe"], seed, "tgated"), phantoms)
        log(f"  seed {seed}: mean Dice " + ", ".join(f"{c} {results[seed][c]['mean_dice']:.3f}" for c in CONDITIONS))
    header = (
        f"Phantom prompt ablation, T-Gated: Dice (mean ± std over {len(s['seeds'])} seeds) of each organ's mask "
        f"when prompted with its own name, a blank prompt, or the next organ's name; {describe(s, phantoms)}"
    )
    report(args.output, header, table(results, organs, s["seeds"]), s, phantoms, {"results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
