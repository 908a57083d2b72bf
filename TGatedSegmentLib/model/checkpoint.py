"""Checkpoint folders: save, load (local, hub, zero-shot CLIPSeg), create untrained.

A checkpoint is a folder that can be pushed to the HuggingFace Hub as is and used offline:

* ``config.json``: :meth:`TGatedConfig.to_dict` (base architecture and identity, adapter sizes,
  preprocessing, vocabulary, training metadata);
* ``model.safetensors``: all weights, or only the trained ones when ``partial_weights`` is set
  (they then load on top of ``base_model_id``: a CLIPSeg hub id or folder, or a TGatedSegment
  checkpoint folder whose CLIPSeg weights are meant; ``base_fingerprint``, when recorded, is the
  SHA-256 of the weights taken from there, checked on loading);
* the tokenizer's files.

Which kind of source a text names is :mod:`.source`'s answer; converting the authors' weights
(``tgated import``) is :mod:`.convert_reference`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..compat import moved_names
from ..errors import CheckpointError
from ..io.atomic import atomic_dir, recover_dir
from ..io.jsonfile import read_json
from ..preprocessing.config import PreprocessConfig
from .clipseg_base import load_clipseg_base, load_clipseg_config
from .configuration import DEFAULT_BASE_MODEL, FORMAT_NAME, AdapterConfig, RefineConfig, TGatedConfig
from .empty_init import empty_weights
from .modeling import TGatedCLIPSeg
from .random_init import init_random_base
from .source import CONFIG_NAME, SourceKind, classify_source, download, missing_error
from .tokenizer import check_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"


@dataclass
class LoadedModel:
    """A model ready for inference or training, with the tokenizer and config it belongs to."""

    model: TGatedCLIPSeg
    tokenizer: Any
    config: TGatedConfig
    source: str


# -- state dicts ---------------------------------------------------------------------------------


def _describe(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_checked(
    model: torch.nn.Module, state_dict: dict, source: str, allow_missing_prefix: str | None = None, assign: bool = False
) -> None:
    """``load_state_dict(strict=True)`` with an error that names the offending keys and shapes."""
    expected = model.state_dict()
    missing = [
        k for k in expected if k not in state_dict and not (allow_missing_prefix and k.startswith(allow_missing_prefix))
    ]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state_dict
        if k in expected and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch (checkpoint vs model) for {_describe(mismatched)}")
    if missing:
        problems.append(f"missing keys {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_describe(unexpected)}")
    if problems:
        raise CheckpointError(
            f"the weights in '{source}' do not fit the model its config describes: " + "; ".join(problems),
            "Make sure config.json and model.safetensors come from the same checkpoint, and that --base-config "
            "names the architecture the weights were trained with.",
        )
    model.load_state_dict(state_dict, strict=allow_missing_prefix is None, assign=assign)


def _read_config(folder: Path) -> dict | None:
    file = folder / CONFIG_NAME
    return read_json(
        file,
        lambda exc: CheckpointError(f"'{file}' is not valid JSON ({exc})", "The checkpoint is corrupt: copy it again."),
    )


# -- public API ----------------------------------------------------------------------------------


def load_model(source: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a TGatedSegment checkpoint (a folder, an imported model's name, a hub id) or a plain
    CLIPSeg (zero-shot).

    ``None`` means the zero-shot default, ``CIDAS/clipseg-rd64-refined``.
    """
    source = str(source or DEFAULT_BASE_MODEL)
    resolved = classify_source(source)
    path = resolved.path or Path(source).expanduser()  # an imported model's NAME: its folder
    if path.suffix.lower() in {".pt", ".pth", ".bin", ".ckpt"} and path.is_file():
        raise CheckpointError(
            f"'{source}' is a single weights file, not a checkpoint folder",
            f"Import it once with `tgated models import {source} --name NAME` (the authors' format), then pass NAME.",
        )
    if path.exists() and not path.is_dir():
        raise CheckpointError(
            f"'{source}' is a file, not a checkpoint folder",
            "Pass the folder that holds config.json, or import the file once with `tgated models "
            "import FILE --name NAME` (a .zip, or a .safetensors with --config) and pass NAME.",
        )
    recover_dir(path)
    if path.is_dir():
        folder = path
    elif resolved.kind is SourceKind.HUB_ID:
        folder = download(source, config_only=True)
    else:
        raise missing_error(source)
    raw = _read_config(folder)
    if raw is None:
        raise CheckpointError(f"'{folder}' has no config.json", "Pass a checkpoint folder or a CLIPSeg model folder.")
    if raw.get("format") != FORMAT_NAME:
        if raw.get("model_type") == "clipseg":  # zero-shot CLIPSeg: transformers fetches only what it needs
            return _load_zero_shot(path if path.is_dir() else source, source, device)

        raise CheckpointError(
            f"'{folder}' is neither a TGatedSegment checkpoint nor a CLIPSeg model",
            "Pass a folder made by `tgated init`, `tgated train` or `tgated import`.",
        )
    if not path.is_dir():
        folder = download(source)
    return _load_tgated(folder, raw, source, device)


def _load_zero_shot(folder: Path | str, source: str, device) -> LoadedModel:
    base = load_clipseg_base(folder)
    config = TGatedConfig(clipseg_config=base.config.to_dict(), base_model_id=source, adapter=None)
    model = TGatedCLIPSeg(config, base_model=base)
    tokenizer = load_tokenizer(folder)
    check_tokenizer(tokenizer, base.config)
    return LoadedModel(model.to(device).eval(), tokenizer, config, source)


def _load_tgated(folder: Path, raw: dict, source: str, device) -> LoadedModel:
    try:
        config = TGatedConfig.from_dict(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"'{folder / CONFIG_NAME}' is not a valid TGatedSegment config ({exc})",
            "The checkpoint is corrupt or from an incompatible version.",
        ) from None
    partial = bool(raw.get("partial_weights"))
    if partial:
        if not config.base_model_id:
            raise CheckpointError(
                f"'{folder}' holds only part of the weights but names no base model to load them on",
                "The checkpoint is incomplete: use one saved with full weights.",
            )
        model = TGatedCLIPSeg(config, base_model=load_base_model(config.base_model_id))
    else:  # every weight comes from the file: build without allocating or initialising any (see _materialise)
        with empty_weights():
            model = TGatedCLIPSeg(config)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"'{folder}' has no {WEIGHTS_NAME}", "The checkpoint is incomplete: copy it again.")
    try:
        from safetensors.torch import load_file

        state_dict = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for truncated/corrupt files
        raise CheckpointError(
            f"cannot read '{weights}' ({str(exc).splitlines()[0][:200]})",
            "The file is corrupt or truncated: copy the checkpoint again.",
        ) from None
    state_dict = {RENAMED_KEYS.get(k, k): v for k, v in state_dict.items()}
    if partial:
        load_state_dict_checked(model, state_dict, str(folder), allow_missing_prefix="base_model.")
    else:
        _materialise(model, state_dict, str(folder))
    expected = raw.get("base_fingerprint") if partial else None
    if expected and base_fingerprint(model, state_dict.keys()) != expected:
        raise CheckpointError(
            f"the base model '{config.base_model_id}' is not the one '{folder}' was trained on (the weights taken "
            "from it differ)",
            "Restore that base model (folder or hub revision), or use a checkpoint saved with full weights.",
        )
    has_tokenizer = any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json"))
    tokenizer = load_tokenizer(folder if has_tokenizer else (config.base_model_id or DEFAULT_BASE_MODEL))
    check_tokenizer(tokenizer, model.base_model.config)
    return LoadedModel(model.to(device).eval(), tokenizer, config, source)


#: Weights saved under an earlier name -> their name now. The first version of prompt centring (one
#: landed commit) kept its two buffers on the model itself, before they moved to their own module.
RENAMED_KEYS = {"prompt_centre": "prompt_centring.centre", "prompt_scale": "prompt_centring.scale"}


def _materialise(model: TGatedCLIPSeg, state_dict: dict, source: str) -> None:
    """Give a model built on the meta device the checkpoint's tensors, in place of its empty ones.

    Random initialisation of a model whose every weight is then overwritten is most of the fixed
    cost of loading (issue 12): construction on ``meta`` allocates nothing and initialises nothing,
    and ``assign=True`` adopts the loaded tensors without a copy. The only state a checkpoint does
    not hold are CLIP's non-persistent ``position_ids`` buffers (0..n-1), rebuilt here.
    """
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    state_dict = {k: v.to(dtypes[k]) if k in dtypes and v.is_floating_point() else v for k, v in state_dict.items()}
    load_state_dict_checked(model, state_dict, source, assign=True)
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            if not name.endswith("position_ids"):
                raise CheckpointError(
                    f"'{source}' leaves the model's buffer {name} unset",
                    "This checkpoint's model has state this version cannot rebuild: re-save it.",
                )
            owner = model.get_submodule(name.rsplit(".", 1)[0])
            owner.register_buffer("position_ids", torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)


def load_base_model(source: str | Path):
    """The CLIPSeg model (``CLIPSegForImageSegmentation``) a partial checkpoint loads on top of:
    a CLIPSeg folder or hub id, or the CLIPSeg part of a TGatedSegment checkpoint (folder or name)."""
    folder = classify_source(source).path or Path(str(source)).expanduser()
    if folder.is_dir():
        raw = _read_config(folder)
        if raw is not None and raw.get("format") == FORMAT_NAME:
            inner = load_model(folder).model
            if inner.peft is not None:
                inner.peft.detach()  # its hooks must not stay on the base we hand out
            return inner.base_model
    return load_clipseg_base(source)


def base_fingerprint(model: TGatedCLIPSeg, saved_keys) -> str:
    """SHA-256 over the ``base_model.`` tensors a partial checkpoint does not store (names, dtypes,
    shapes, bytes): what loading takes from ``base_model_id``."""
    saved = set(saved_keys)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not name.startswith("base_model.") or name in saved:
            continue
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def save_checkpoint(
    model: TGatedCLIPSeg,
    tokenizer,
    folder: str | Path,
    config: TGatedConfig | None = None,
    state_dict: dict | None = None,
    partial_weights: bool = False,
    extra_files: dict[str, bytes | str] | None = None,
    base_fingerprint: str | None = None,
) -> Path:
    """Write a checkpoint folder atomically (a kill at any moment leaves the previous one intact).

    ``partial_weights``: ``state_dict`` holds only some weights (the trained ones), the rest load
    from ``config.base_model_id``; ``base_fingerprint`` (see :func:`base_fingerprint`) is then
    recorded so that loading notices a changed base.
    """
    from safetensors.torch import save_file

    config = config or model.config
    config.clipseg_config = model.base_model.config.to_dict()
    raw = config.to_dict()
    raw["partial_weights"] = bool(partial_weights)
    if partial_weights and base_fingerprint:
        raw["base_fingerprint"] = base_fingerprint
    state_dict = state_dict if state_dict is not None else model.state_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_dir(folder) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(raw, indent=2), encoding="utf-8")
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "producer": FORMAT_NAME})
        tokenizer.save_pretrained(str(tmp))
        for name, content in (extra_files or {}).items():
            target = tmp / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return Path(folder)


def build_model(
    base: str | Path,
    tokenizer: str | Path | Any | None = None,
    temporal: bool = True,
    adapter: AdapterConfig | None = None,
    preprocessing: PreprocessConfig | None = None,
    vocabulary=None,
    seed: int = 0,
    refine: RefineConfig | None = None,
) -> LoadedModel:
    """An untrained model in memory: random adapter on a base that is a config (random) or pretrained.

    ``tokenizer`` is a folder/hub id, a tokenizer object, ``"compact"`` (offline, built from the
    vocabulary's words) or ``None`` (the base's own, when the base is a model folder or hub id).
    ``adapter`` defaults to the paper's sizes (or the architecture's own, ``architectures.ADAPTERS``)
    in residual mode; ``refine`` adds the refinement head.
    """
    from ..vocabulary import ABDOMEN13
    from .architectures import adapter_sizes

    torch.manual_seed(seed)
    base = str(base)
    random_base = classify_source(base).random_weights
    if random_base:
        clipseg_config = load_clipseg_config(base)
        base_model, base_id = None, None
    else:
        base_model = load_clipseg_base(base)
        clipseg_config, base_id = base_model.config, base
    vocabulary = list(vocabulary) if vocabulary is not None else list(ABDOMEN13)
    if tokenizer is None:
        if random_base:
            raise CheckpointError(
                "a random base from a config file has no tokenizer",
                "Pass --tokenizer with a CLIP tokenizer folder or hub id, or --tokenizer compact.",
            )
        tokenizer = base
    tokenizer = resolve_tokenizer(tokenizer, vocabulary)
    check_tokenizer(tokenizer, clipseg_config)
    hidden = clipseg_config.vision_config.hidden_size
    config = TGatedConfig(
        clipseg_config=clipseg_config.to_dict(),
        base_model_id=base_id,
        adapter=(adapter or AdapterConfig.default_for(hidden, **adapter_sizes(base))) if temporal else None,
        preprocessing=preprocessing or PreprocessConfig(),
        vocabulary=vocabulary,
        refine=refine,
    )
    model = TGatedCLIPSeg(config, base_model=base_model)
    if random_base:
        init_random_base(model.base_model)  # decoder init and position embeddings (random_init.py)
    return LoadedModel(model, tokenizer, config, base)


def resolve_tokenizer(tokenizer: str | Path | Any, vocabulary=()):
    """A tokenizer object from a folder/hub id, ``"compact"`` (built from the vocabulary's prompts) or as is."""
    from .tokenizer import compact_clip_tokenizer

    if isinstance(tokenizer, (str, Path)):
        if str(tokenizer) == "compact":
            return compact_clip_tokenizer([o.prompt for o in vocabulary])
        return load_tokenizer(tokenizer)
    return tokenizer


def init_checkpoint(
    base: str | Path, output: str | Path, tokenizer: str | Path | Any | None = None, **options: Any
) -> Path:
    """Write an untrained checkpoint folder: :func:`build_model` (``options``: temporal, adapter,
    preprocessing, vocabulary, seed, refine) saved to ``output``."""
    loaded = build_model(base, tokenizer, **options)
    return save_checkpoint(loaded.model, loaded.tokenizer, output, loaded.config)


# Names that moved; the old imports keep working with a DeprecationWarning.
__getattr__ = moved_names(
    __name__,
    {
        "convert_reference_state_dict": "TGatedSegmentLib.model.convert_reference",
        "reference_adapter_config": "TGatedSegmentLib.model.convert_reference",
        "import_reference_checkpoint": "TGatedSegmentLib.model.convert_reference",
        "_looks_like_hub_id": "TGatedSegmentLib.model.source:looks_like_hub_id",
        "_hub_error": "TGatedSegmentLib.model.source:hub_error",
        "_download": "TGatedSegmentLib.model.source:download",
        "OFFLINE_HINT": "TGatedSegmentLib.model.source",
        "reset_decoder_init": "TGatedSegmentLib.model.random_init",
    },
)
