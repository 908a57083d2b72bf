"""The checks of :class:`config.TrainConfig` that concern several settings, and the recipe that fills
the rest: ``TrainConfig.__post_init__`` runs them (each single value is checked by its option)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from .choices import PEFT_PARTS
from .options import check_value, settings
from .recipes import RECIPES, recipe_for

if TYPE_CHECKING:
    from .config import TrainConfig


def apply_recipe(config: TrainConfig) -> None:
    """Fill every setting left at None from the recipe (named, or chosen by the base)."""
    config.recipe = recipe_for(config.recipe, config.base)
    (recipe_setting,) = (entry for entry in settings(type(config)) if entry.name == "recipe")
    check_value(recipe_setting, config.recipe)
    filled = [entry.name for entry in settings(type(config)) if entry.option.recipe]
    given = {name for name in filled if getattr(config, name) is not None}
    setattr(config, "_given", frozenset(given))  # not a setting: what was chosen, for later checks
    for name in filled:
        if getattr(config, name) is None:
            setattr(config, name, RECIPES[config.recipe][name])
    config.refine = int(config.refine or 0)
    if config.batching == "pairs" and config.exclusive:
        # the exclusive term compares the prompts decoded for one slice: pair batches have one
        if "exclusive" in given:
            raise InputError(
                "--exclusive needs multi-prompt slice batches (each pair batch decodes one prompt per slice)",
                "Add --batching slices, or leave --exclusive out.",
            )
        config.exclusive = 0.0
    _check_context_head(config, given)
    _check_adapter_input(config, given)
    _check_refine_window(config, given)


def given(config: TrainConfig, name: str) -> bool:
    """Whether setting ``name`` was chosen by the user (or the caller), not filled in by the recipe."""
    return name in getattr(config, "_given", ())


def _check_refine_window(config: TrainConfig, given: set) -> None:
    """Neighbour slices reach the refinement head through the temporal adapter's window: a run
    without a head, or without a temporal adapter, reads the centre slice only (the recipe's value
    lapses there; an explicit one is an error). The window's mix lapses with the window."""
    if config.refine_window == 1:
        if config.refine_window_mix != "linear" and "refine_window_mix" in given:
            raise InputError(
                f"--refine-window-mix {config.refine_window_mix} mixes neighbour slices, and this run's "
                "refinement head reads the centre slice only",
                "Leave --refine-window-mix out, or pass --refine-window 3 or 5 too.",
            )
        config.refine_window_mix = "linear"
        return
    reason = None
    if not config.refine:
        reason = "no refinement head (--refine 0)"
    elif not config.temporal:
        reason = "no temporal adapter, so no window of neighbour slices"
    if reason is None:
        return
    if "refine_window" in given:
        raise InputError(
            f"--refine-window {config.refine_window} reads neighbour slices, and this run has {reason}",
            "Leave --refine-window out (or pass 1), or train a temporal model with a refinement head.",
        )
    config.refine_window = 1
    _check_refine_window(config, given)


def _check_adapter_input(config: TrainConfig, given: set) -> None:
    """Slice differences are an input of the residual adapter: the recipe's choice lapses for the
    authors' wiring and the slice-wise baseline; an explicit one there is an error."""
    if config.adapter_input == "slices" or (config.temporal and config.adapter != "reference"):
        return
    if "adapter_input" in given:
        raise InputError(
            f"--adapter-input {config.adapter_input} is read by the residual adapter; this run has "
            + ("the authors' wiring (--adapter reference)" if config.temporal else "no temporal adapter"),
            "Leave --adapter-input out, or use --adapter residual with --temporal.",
        )
    config.adapter_input = "slices"


def _check_context_head(config: TrainConfig, given: set) -> None:
    """The context head reads the residual adapter's output; its loss needs the head. What the recipe
    set lapses where it cannot apply; what the user asked for there is an error."""
    if config.context_head != "none" and (config.adapter == "reference" or not config.temporal):
        if "context_head" in given:
            raise InputError(
                "--context-head reads the residual adapter's output; this run has "
                + ("the authors' wiring (--adapter reference)" if config.temporal else "no temporal adapter"),
                "Leave --context-head out, or use --adapter residual with --temporal.",
            )
        config.context_head = "none"
    if config.context_head == "loss" and not config.context_loss:
        # a read-out that neither the prediction nor a loss uses would train nothing (and leave
        # parameters without gradients, which DistributedDataParallel refuses)
        raise InputError(
            "--context-head loss is read by the context loss only, and this run's --context-loss is 0",
            "Add --context-loss 1 (its weight), or use --context-head logits.",
        )
    if config.context_loss and config.context_head == "none":
        if "context_loss" in given:
            raise InputError(
                "--context-loss trains the context head, and this run has none",
                "Add --context-head loss (or logits) with a residual temporal adapter, or leave --context-loss out.",
            )
        config.context_loss = 0.0


def check_finetune(config: TrainConfig) -> None:
    if config.freeze_encoders and config.finetune == "full":
        config.finetune = "decoder"  # --freeze-encoders is the decoder mode under its old name
    config.freeze_encoders = config.finetune != "full"  # CLIP is frozen in both other modes
    if config.peft is None:
        given = [f"--{_flag(n)}" for n in ("peft_dim", "peft_parts") if getattr(config, n) is not None]
        if given:
            raise InputError(f"{' and '.join(given)} without --peft", "Add --peft dense or --peft shallow.")
    if config.peft_parts is not None:
        parts = [p.strip().lower() for p in str(config.peft_parts).split(",") if p.strip()]
        unknown = [p for p in parts if p not in PEFT_PARTS]
        if unknown or not parts:
            raise InputError(
                f"--peft-parts '{config.peft_parts}' "
                + (f"names unknown parts ({', '.join(unknown)})" if unknown else "names no part"),
                f"Use a comma list of {', '.join(PEFT_PARTS)}, e.g. vision,text.",
            )
        config.peft_parts = ",".join(p for p in PEFT_PARTS if p in parts)
    if config.probabilistic and not config.temporal:
        raise InputError(
            "--probabilistic needs the temporal adapter (it makes its attention probabilistic)",
            "Drop --no-temporal, or train without --probabilistic.",
        )


def check_token_cache(config: TrainConfig) -> None:
    """Cached tokens are the encoder's output for unaugmented slices of a frozen encoder."""
    if config.batching != "slices":
        raise InputError("--token-cache works with multi-prompt slice batches", "Add --batching slices.")
    if config.finetune == "full" and config.lr_encoder > 0:
        raise InputError(
            "--token-cache needs a frozen vision encoder (cached tokens cannot train it)",
            "Add --finetune decoder or --finetune adapters.",
        )
    pixel_options = ("max_rotation", "max_zoom", "intensity", "organ_intensity", "random_contrast")
    augmented = [f"--{_flag(n)} 0" for n in pixel_options if getattr(config, n)]
    if augmented:
        raise InputError(
            "--token-cache stores the tokens of unaugmented slices, so pixel augmentation is off",
            f"Add {' '.join(augmented)}.",
        )


def local_path(value) -> str:
    """An existing local file or folder as an absolute path; anything else (hub id, builtin:) as is."""
    text = str(value)
    path = Path(text).expanduser()
    return str(path.absolute()) if text and path.exists() else text


def _flag(name: str) -> str:
    return name.replace("_", "-")
