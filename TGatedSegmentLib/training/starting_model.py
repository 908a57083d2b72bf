"""The model a run starts from: ``--base`` loaded or built, then extended with what the run adds.

A checkpoint folder, a CLIPSeg folder or hub id (pretrained) or a CLIPSeg config / ``builtin:``
architecture (random weights); a temporal adapter, PEFT adapters, probabilistic attention or a
refinement head the base lacks are added, freshly initialised, on the same CLIPSeg weights.
"""

from __future__ import annotations

import copy
import logging

import torch

from ..model.checkpoint import LoadedModel, build_model, load_model, resolve_tokenizer
from ..model.configuration import AdapterConfig, PeftConfig, RefineConfig
from ..model.modeling import TGatedCLIPSeg, conditioned_activation
from ..model.tokenizer import check_tokenizer, tokenize
from .config import TrainConfig
from .preflight import BaseInfo, check_finetune

log = logging.getLogger(__name__)


def _rebuild(loaded: LoadedModel, config, seed: int) -> LoadedModel:
    """The model ``config`` describes, on the same CLIPSeg base, with every weight of ``loaded`` that
    still fits (same name and shape) and fresh initialisation for what is new."""
    old = loaded.model
    if old.peft is not None:
        old.peft.detach()  # the new model attaches its own hooks to the shared base
    torch.manual_seed(seed)
    model = TGatedCLIPSeg(config, base_model=old.base_model)
    new_state = model.state_dict()
    kept = {k: v for k, v in old.state_dict().items() if k in new_state and new_state[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    return LoadedModel(model, loaded.tokenizer, config, loaded.source)


def refine_config(config: TrainConfig) -> RefineConfig:
    """A new refinement head as the run asks (``config.refine`` channels)."""
    return RefineConfig(config.refine, window=config.refine_window, window_mix=config.refine_window_mix)


def new_adapter_config(config: TrainConfig, hidden: int, base: str = "", clipseg=None) -> AdapterConfig:
    """A fresh adapter as the run asks: the paper's sizes (or the architecture's), ``config.adapter``'s wiring."""
    from ..model.architectures import adapter_sizes

    mode = "reference" if config.adapter == "reference" else "residual"
    sizes = adapter_sizes(base)
    if mode == "residual" and clipseg is not None:
        sizes.setdefault("activation", conditioned_activation(clipseg))
    # (config_checks has already set the head to "none" for the authors' wiring)
    return AdapterConfig.default_for(
        hidden,
        **sizes,
        ignore_context=config.adapter == "control",
        mode=mode,
        context_head=config.context_head,
        temporal_input=config.adapter_input,  # (config_checks: "slices" for the authors' wiring)
    )


def _adapter_changed(loaded: LoadedModel, config: TrainConfig) -> LoadedModel:
    temporal = config.temporal
    if loaded.model.temporal == temporal:
        return loaded
    model_config = copy.deepcopy(loaded.config)
    hidden = loaded.model.base_model.config.vision_config.hidden_size
    model_config.adapter = (
        new_adapter_config(config, hidden, clipseg=loaded.model.base_model.config) if temporal else None
    )
    if model_config.adapter is not None and model_config.adapter.mode == "reference":
        model_config.refine = None
    log.warning(
        "the base %s; training %s",
        "has a temporal adapter" if loaded.model.temporal else "has no adapter",
        "with a new, randomly initialised adapter" if temporal else "the slice-wise baseline without it",
    )
    return _rebuild(loaded, model_config, config.seed)


def _check_kept_parts(model: TGatedCLIPSeg, config: TrainConfig) -> None:
    """A part the base already has is fine-tuned as it is: an option that asks for it in another shape
    is refused (silently keeping the base's would train something other than what was asked)."""
    from ..errors import InputError
    from .config_checks import given

    kept: dict[str, tuple[str, object]] = {}  # setting -> (what the base has, its value)
    if model.refine is not None:
        kept["refine_window"] = ("refinement head reads this many slices", model.refine.config.window)
        kept["refine_window_mix"] = ("refinement head mixes its window", model.refine.config.window_mix)
    if model.adapter is not None and not model.reference_wiring:
        kept["adapter_input"] = ("adapter reads", model.adapter.config.temporal_input)
    if model.context_probe is not None:
        kept["context_head"] = ("context head", model.adapter.config.context_head)
    if model.config.prompt_centring:
        kept["prompt_centring"] = ("prompt embeddings are centred", "vocabulary")
    for name, (what, value) in kept.items():
        if given(config, name) and getattr(config, name) != value:
            flag = "--" + name.replace("_", "-")
            raise InputError(
                f"{flag} {getattr(config, name)}: the base's {what} ({value}), and fine-tuning keeps the base's",
                f"Leave {flag} out (or pass {value}), or start from a base without it.",
            )


def extend_for_training(loaded: LoadedModel, config: TrainConfig) -> LoadedModel:
    """Add what the run asks for and the base lacks: PEFT adapters (zero-initialised: the model
    starts equal to its base) and probabilistic temporal attention (the base's attention weights
    become the key/value means, ``var_proj`` starts at its init: equal outputs without sampling)."""
    model = loaded.model
    _check_kept_parts(model, config)
    add_peft = config.peft is not None and model.peft is None
    add_prob = config.probabilistic and model.adapter is not None and not model.adapter.config.probabilistic
    add_refine = bool(config.refine) and model.refine is None and not model.reference_wiring
    add_probe = config.context_head != "none" and model.adapter is not None
    add_probe = add_probe and model.context_probe is None and not model.reference_wiring
    if not (add_peft or add_prob or add_refine or add_probe):
        return loaded
    new = copy.deepcopy(loaded.config)
    if add_refine:
        new.refine = refine_config(config)
        log.info("adding a refinement head (%d channels, %d slice(s))", config.refine, config.refine_window)
    if add_peft:
        new.peft = PeftConfig(**config.peft_settings())
        log.info("adding %s PEFT adapters (dim %d)", new.peft.variant, new.peft.dim)
    if add_probe:
        new.adapter.context_head = config.context_head
        log.info("adding a context head (%s)", config.context_head)
    if add_prob:
        new.adapter.probabilistic = True
        log.info("the temporal attention becomes probabilistic (means from the base, variances at their init)")
    try:
        extended = _rebuild(loaded, new, config.seed + 1)
    except ValueError as exc:  # PeftAdapters' own size check (the base is only known now for hub ids)
        from ..errors import InputError

        raise InputError(f"cannot add PEFT adapters to this base: {exc}", "Use --peft dense.") from None
    missing = set(extended.model.state_dict()) - set(model.state_dict())
    added = ("peft.", "refine.", "context_probe.")
    assert all(k.startswith(added) or ".var_proj." in k for k in missing), sorted(missing)[:5]
    return extended


def _centre_prompts(loaded: LoadedModel, config: TrainConfig, organs: list) -> LoadedModel:
    """``--prompt-centring vocabulary``: the prompts' embeddings centred on the run's organ prompts,
    fitted once before the first step (``TGatedCLIPSeg.fit_prompt_centre``). A base that is already
    centred keeps its centre: its decoder learnt with it."""
    if config.prompt_centring != "vocabulary" or loaded.config.prompt_centring:
        return loaded
    new = copy.deepcopy(loaded.config)
    new.prompt_centring = True
    centred = _rebuild(loaded, new, config.seed + 2)
    input_ids, attention_mask = tokenize(centred.tokenizer, [organ.prompt for organ in organs])
    centred.model.fit_prompt_centre(input_ids, attention_mask)
    log.info(
        "prompt embeddings centred on the %d organ prompts (scale %.2f)",
        len(organs),
        float(centred.model.prompt_centring.scale),
    )
    return centred


def build_training_model(config: TrainConfig, organs: list) -> LoadedModel:
    """The starting model: a checkpoint folder, a CLIPSeg folder or hub id (pretrained), or a
    CLIPSeg config / ``builtin:`` architecture (random weights)."""
    from ..model.clipseg_base import load_clipseg_config
    from ..preprocessing.config import PreprocessConfig
    from .recipes import random_weights

    base = str(config.base)
    if random_weights(base):
        preprocessing = PreprocessConfig(image_size=config.image_size) if config.image_size else None
        clipseg = load_clipseg_config(base)
        adapter = (
            new_adapter_config(config, clipseg.vision_config.hidden_size, base, clipseg) if config.temporal else None
        )
        # (TrainConfig already refuses a refinement head with the authors' wiring)
        refine = refine_config(config) if config.refine else None
        loaded = build_model(
            base,
            tokenizer=config.tokenizer,
            temporal=config.temporal,
            adapter=adapter,
            preprocessing=preprocessing,
            vocabulary=organs,
            seed=config.seed,
            refine=refine,
        )
    else:
        loaded = load_model(base)
        if config.tokenizer:
            loaded.tokenizer = resolve_tokenizer(config.tokenizer, organs)
            check_tokenizer(loaded.tokenizer, loaded.model.base_model.config)
        loaded = _adapter_changed(loaded, config)
    clip = loaded.model.base_model.config
    own = loaded.config.peft.to_dict() if loaded.config.peft is not None else None
    check_finetune(config, BaseInfo(clip.text_config.hidden_size, clip.projection_dim, own))  # again: hub ids
    loaded = extend_for_training(loaded, config)
    loaded = _centre_prompts(loaded, config, organs)
    loaded.config.vocabulary = list(organs)
    if config.image_size:
        loaded.config.preprocessing.image_size = config.image_size
    loaded.config.training = None
    return loaded
