"""Fine-tune T-Gated CLIPSeg (or the slice-wise baseline) on labelled volumes, resumably.

>>> from TGatedSegmentLib.training import TrainConfig, train
>>> run = train(TrainConfig(data="Dataset001", val="split:2", output="runs/tgated"), progress=print)

A run folder holds ``best/`` (highest mean validation Dice) and ``last/`` (the latest weights),
both checkpoint folders with the training metadata in ``config.json`` ("training"), and
``resume/``: a checkpoint plus ``state.pt`` (optimiser, scheduler, RNG, counters) and
``run.json`` (settings, readable without torch). Every folder is swapped in atomically, so a
kill at any moment leaves complete ``best/``, ``last/`` and ``resume/``; cancelling (CancelToken,
SIGTERM / Ctrl-C in the CLI) saves ``last/`` and ``resume/`` at the last completed step.

Optimisation follows the paper and the authors' optimiser (README "Training" lists where we
depart from their code): AdamW (weight decay 1e-4) with learning rates 1e-6 for the CLIP vision
and text encoders, 1e-5 for the decoder, 5e-5 for every adapter parameter; cosine annealing with
warm restarts every 5 epochs (evaluated at fractional epochs, so the rate also falls within an
epoch); gradient clipping at 0.5; non-finite steps skipped. The encoders are called as submodules
(never HF's ``no_grad`` paths), so the baseline trains them exactly like the T-Gated model.

``finetune`` selects what trains (``TGatedCLIPSeg.set_finetune``): ``full`` everything (the
paper), ``decoder`` (alias ``freeze_encoders``) the decoder and the adapters with CLIP frozen,
``adapters`` the temporal adapter and the PEFT bottlenecks only (VLSM-Adapter), which get their
own optimiser group ``peft``. When the vision encoder needs no gradient it runs under
``no_grad``. In the two frozen modes ``best/``, ``last/`` and ``resume/`` store only the trained
parameters, on top of the base model's identity (see :func:`checkpoint_identity`).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path

import torch

from ..errors import Cancelled, InputError
from ..inference.api import Segmenter, resolve_device
from ..model.checkpoint import (
    LoadedModel, base_fingerprint, build_model, load_base_model, load_model, resolve_tokenizer, save_checkpoint,
)
from ..model.configuration import AdapterConfig, PeftConfig
from ..model.modeling import TGatedCLIPSeg
from ..model.tokenizer import check_tokenizer, tokenize
from ..preprocessing.slices import SliceCodec
from ..progress import CancelToken, Progress, Throttle
from . import distributed
from .cache import CachedVolume, cache_cases
from .chunks import ChunkAugmentation, ChunkDataset, ChunkSampler, make_chunk_loader, slice_weights
from .config import DEFAULT_LR_PEFT, TrainConfig
from .losses import segmentation_loss
from .schedule import make_schedule
from .token_cache import build_token_cache
from .preflight import (
    BEST_DIR, LAST_DIR, RESUME_DIR, RUN_FILE, RUN_ITEMS, BaseInfo, Plan, check_finetune, preflight,
)
from .sampling import SampleIndex, WindowSampler
from .windows import WindowDataset, make_loader

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
GROUPS = ("vision", "text", "decoder", "adapter", "refine")
PEFT_GROUP = "peft"  # VLSM bottleneck adapters, when the model has them


# --------------------------------------------------------------------------- model and optimiser


def parameter_group(name: str) -> str:
    """The optimiser group of a parameter; every parameter has one (a new one fails loudly)."""
    if name.startswith("adapter."):
        return "adapter"
    if name.startswith("refine."):
        return "refine"
    if name.startswith("peft."):
        return PEFT_GROUP
    if name.startswith("base_model.decoder."):
        return "decoder"
    if name.startswith(("base_model.clip.vision_model.", "base_model.clip.visual_projection.")):
        return "vision"
    if name.startswith(("base_model.clip.text_model.", "base_model.clip.text_projection.")) or \
            name == "base_model.clip.logit_scale":
        return "text"
    raise RuntimeError(f"parameter '{name}' belongs to no optimiser group")


def group_learning_rates(config: TrainConfig, peft_variant: str | None = None) -> dict[str, float]:
    """Per group; the PEFT adapters' rate defaults to VLSM-Adapter's for their variant."""
    variant = peft_variant or config.peft or "dense"
    lr_peft = config.lr_peft if config.lr_peft is not None else DEFAULT_LR_PEFT[variant]
    text = config.lr_text if config.lr_text is not None else config.lr_encoder
    return {"vision": config.lr_encoder, "text": text, "decoder": config.lr_decoder,
            "adapter": config.lr_adapter, "refine": config.lr_adapter, PEFT_GROUP: lr_peft}


def freeze_encoders(model: TGatedCLIPSeg) -> None:
    """Vision and text encoders fixed: no gradients, so autograd records nothing through them
    (the same as running them under ``no_grad``), and eval mode."""
    for name, p in model.named_parameters():
        if parameter_group(name) in ("vision", "text"):
            p.requires_grad_(False)


def model_learning_rates(model: TGatedCLIPSeg, config: TrainConfig) -> dict[str, float]:
    """:func:`group_learning_rates` for this model (its PEFT variant, if it has adapters)."""
    variant = model.peft.config.variant if getattr(model, "peft", None) is not None else None
    return group_learning_rates(config, variant)


def freeze_zero_rate_parts(model: TGatedCLIPSeg, config: TrainConfig) -> set[str]:
    """A part whose learning rate is 0 (the ``cpu`` recipe's text encoder) does not train: no
    gradients for it, so backward and AdamW skip it (the same weights as stepping it at lr 0,
    where AdamW's decoupled weight decay is lr x decay = 0 too). Returns the frozen names."""
    lrs = model_learning_rates(model, config)
    frozen = set()
    for name, p in model.named_parameters():
        if p.requires_grad and lrs[parameter_group(name)] == 0:
            p.requires_grad_(False)
            frozen.add(name)
    model.vision_without_grad = not model.vision_needs_grad
    return frozen


def set_train_mode(model: TGatedCLIPSeg, frozen_encoders: bool, frozen_decoder: bool = False) -> None:
    """Training mode, except frozen parts (eval: no dropout in what does not train)."""
    model.train()
    if frozen_encoders:
        model.base_model.clip.eval()
    if frozen_decoder:
        model.base_model.decoder.eval()


def set_train_mode_for(model: TGatedCLIPSeg, finetune: str) -> None:
    set_train_mode(model, finetune != "full", finetune == "adapters")


def make_optimizer(model: TGatedCLIPSeg, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with one group per part; all trainable parameters, ``temporal_pos_emb`` included,
    frozen ones left out (so every trained parameter is in exactly one group)."""
    lrs = model_learning_rates(model, config)
    params: dict[str, list] = {g: [] for g in GROUPS + (PEFT_GROUP,)}
    for name, p in model.named_parameters():
        group = parameter_group(name)
        if p.requires_grad:
            params[group].append(p)
    groups = [{"name": g, "params": ps, "lr": lrs[g]} for g, ps in params.items() if ps]
    # one fused kernel for all parameters: on a CPU a fifth of the per-tensor loop's time
    fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=config.lr_decoder, weight_decay=config.weight_decay, fused=fused or None)


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


def new_adapter_config(config: TrainConfig, hidden: int, base: str = "") -> AdapterConfig:
    """A fresh adapter as the run asks: the paper's sizes (or the architecture's), ``config.adapter``'s wiring."""
    from ..model.architectures import adapter_sizes

    return AdapterConfig.default_for(hidden, **adapter_sizes(base), ignore_context=config.adapter == "control",
                                     mode="reference" if config.adapter == "reference" else "residual")


def _adapter_changed(loaded: LoadedModel, config: TrainConfig) -> LoadedModel:
    temporal = config.temporal
    if loaded.model.temporal == temporal:
        return loaded
    model_config = copy.deepcopy(loaded.config)
    hidden = loaded.model.base_model.config.vision_config.hidden_size
    model_config.adapter = new_adapter_config(config, hidden) if temporal else None
    if model_config.adapter is not None and model_config.adapter.mode == "reference":
        model_config.refine = None
    log.warning("the base %s; training %s", "has a temporal adapter" if loaded.model.temporal else "has no adapter",
                "with a new, randomly initialised adapter" if temporal else "the slice-wise baseline without it")
    return _rebuild(loaded, model_config, config.seed)


def extend_for_training(loaded: LoadedModel, config: TrainConfig) -> LoadedModel:
    """Add what the run asks for and the base lacks: PEFT adapters (zero-initialised: the model
    starts equal to its base) and probabilistic temporal attention (the base's attention weights
    become the key/value means, ``var_proj`` starts at its init: equal outputs without sampling)."""
    model = loaded.model
    add_peft = config.peft is not None and model.peft is None
    add_prob = config.probabilistic and model.adapter is not None and not model.adapter.config.probabilistic
    add_refine = bool(config.refine) and model.refine is None and not model.reference_wiring
    if not (add_peft or add_prob or add_refine):
        return loaded
    new = copy.deepcopy(loaded.config)
    if add_refine:
        from ..model.configuration import RefineConfig

        new.refine = RefineConfig(config.refine)
        log.info("adding a refinement head (%d channels)", config.refine)
    if add_peft:
        new.peft = PeftConfig(**config.peft_settings())
        log.info("adding %s PEFT adapters (dim %d)", new.peft.variant, new.peft.dim)
    if add_prob:
        new.adapter.probabilistic = True
        log.info("the temporal attention becomes probabilistic (means from the base, variances at their init)")
    try:
        extended = _rebuild(loaded, new, config.seed + 1)
    except ValueError as exc:  # PeftAdapters' own size check (the base is only known now for hub ids)
        from ..errors import InputError

        raise InputError(f"cannot add PEFT adapters to this base: {exc}", "Use --peft dense.") from None
    missing = set(extended.model.state_dict()) - set(model.state_dict())
    assert all(k.startswith(("peft.", "refine.")) or ".var_proj." in k for k in missing), sorted(missing)[:5]
    return extended


def checkpoint_identity(config: TrainConfig, loaded: LoadedModel, frozen_keys: set[str]) -> tuple[str | None, str]:
    """Where a partial checkpoint's left-out (frozen, ``base_model.``) weights can be reloaded from.

    * a CLIPSeg folder or hub id as ``--base``: that (exactly its weights);
    * a TGatedSegment checkpoint: the CLIPSeg base it names, when the frozen weights equal that
      base's (e.g. a ``tgated init`` folder, or a run that froze them too); otherwise the checkpoint
      folder itself;
    * a random architecture (``builtin:``, a config file): none (the run then saves full weights).

    Returns ``(identity or None, explanation)``.
    """
    from .recipes import random_weights

    base = str(config.base)
    if random_weights(base):
        return None, f"the base '{base}' is an architecture with random weights: nothing to reload them from"
    if loaded.config.base_model_id == base:  # a plain CLIPSeg (zero-shot load)
        return base, f"on top of the CLIPSeg base '{base}'"
    named = loaded.config.base_model_id
    if named:
        try:
            reference = load_base_model(named).state_dict()
            state = loaded.model.state_dict()
            same = all(k.removeprefix("base_model.") in reference and
                       torch.equal(state[k].cpu(), reference[k.removeprefix("base_model.")]) for k in frozen_keys)
            if same:
                return named, f"on top of '{named}' (the base of '{base}'; its frozen weights are that base's)"
            why = f"its frozen weights differ from those of its base '{named}'"
        except Exception as exc:  # not reachable (offline hub id, moved folder): fall back to the checkpoint itself
            why = f"its base '{named}' cannot be loaded here ({type(exc).__name__})"
    else:
        why = "it names no CLIPSeg base"
    return base, f"on top of the checkpoint '{base}' ({why})"


def build_training_model(config: TrainConfig, organs: list) -> LoadedModel:
    """The starting model: a checkpoint folder, a CLIPSeg folder or hub id (pretrained), or a
    CLIPSeg config / ``builtin:`` architecture (random weights)."""
    from ..model.checkpoint import load_clipseg_config
    from ..model.configuration import PreprocessConfig, RefineConfig
    from .recipes import random_weights

    base = str(config.base)
    if random_weights(base):
        preprocessing = PreprocessConfig(image_size=config.image_size) if config.image_size else None
        hidden = load_clipseg_config(base).vision_config.hidden_size
        adapter = new_adapter_config(config, hidden, base) if config.temporal else None
        # (TrainConfig already refuses a refinement head with the authors' wiring)
        refine = RefineConfig(config.refine) if config.refine else None
        loaded = build_model(base, tokenizer=config.tokenizer, temporal=config.temporal, adapter=adapter,
                             preprocessing=preprocessing, vocabulary=organs, seed=config.seed, refine=refine)
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
    loaded.config.vocabulary = list(organs)
    if config.image_size:
        loaded.config.preprocessing.image_size = config.image_size
    loaded.config.training = None
    return loaded


def _grad_scaler():
    """float16 loss scaling (``torch.amp.GradScaler`` from torch 2.3, ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


class StepRunner:
    """One optimisation step: forward (through DDP when wrapped), loss, backward, clipping, AdamW.

    The gradient norm is taken after DDP averaged the gradients, so every rank makes the same
    skip decision for a non-finite step. Used by the trainer and the throughput benchmark.
    """

    def __init__(self, model: TGatedCLIPSeg, optimizer: torch.optim.Optimizer, config: TrainConfig,
                 prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, net: torch.nn.Module | None = None,
                 amp_dtype: torch.dtype | None = None):
        self.model, self.net = model, net if net is not None else model
        self.optimizer, self.config = optimizer, config
        self.prompt_ids, self.prompt_mask = prompt_ids, prompt_mask  # (K, tokens): one row per prompt
        self.device = prompt_ids.device
        self.amp_dtype = amp_dtype if self.device.type == "cuda" else None
        self.scaler = _grad_scaler() if self.amp_dtype == torch.float16 else None
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.skipped = 0

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(logits, targets, prompt of each item, slice of each item or None) of a batch of either kind:

        * pairs: pixels (B, S, 3, H, W), target (B, H, W), prompt (B,) rows of prompt_ids;
        * slices (``chunks.collate_chunks``): pixels (U, 3, H, W), windows (B, S), items (M, 2),
          targets (M, H, W); every prompt is encoded once.
        """
        device = self.device
        pixels = batch["pixels"].to(device, non_blocking=True)
        if "items" in batch:
            items = batch["items"].to(device)
            tokens = batch["tokens"].to(device, non_blocking=True) if "tokens" in batch else None
            with self._autocast():
                logits = self.net(pixels, self.prompt_ids, self.prompt_mask, windows=batch["windows"].to(device),
                                  items=items, tokens=tokens)  # (M, H, W)
            return logits, batch["targets"].to(device, non_blocking=True), items[:, 1], items[:, 0]
        prompt = batch["prompt"].to(device)
        with self._autocast():
            logits = self.net(pixels, self.prompt_ids[prompt], self.prompt_mask[prompt])  # (B, H, W)
        return logits, batch["target"].to(device, non_blocking=True), prompt, None

    def loss(self, batch: dict) -> torch.Tensor:
        logits, target, prompt, slices = self.logits(batch)
        exclusive = self.config.exclusive if slices is not None else 0.0
        return segmentation_loss(logits, target, self.model.gate_penalty(), self.config.gate_penalty,
                                 self.config.dice, prompt, slices, exclusive)[0]

    def __call__(self, batch: dict) -> float:
        """One optimisation step on a batch (see :meth:`logits`) -> its loss."""
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip or float("inf"))
        if torch.isfinite(norm):
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
        else:
            self.skipped += 1
            log.warning("optimiser step skipped: non-finite gradient norm")
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


# --------------------------------------------------------------------------- the run


def _as_progress(progress) -> Progress:
    if progress is None:
        return Progress()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return Progress(progress)
    raise TypeError("progress must be a Progress, a callable taking an event dict, or None")


def train(config: TrainConfig, progress=None, cancel: CancelToken | None = None, plan: Plan | None = None) -> Path:
    """Train as ``config`` says and return the run folder (``best/``, ``last/``, ``resume/``).

    ``progress``: a :class:`Progress` (``make_progress("tqdm")`` in a shell), a callable receiving
    event dicts, or None. ``cancel``: set it to stop after the current step; the last completed
    step is saved and :class:`Cancelled` raised. ``plan``: a :func:`preflight` result already
    computed by the caller (the CLI checks before importing torch).
    """
    progress = _as_progress(progress)
    cancel = cancel or CancelToken()
    device = resolve_device(config.device)
    ctx, device = distributed.setup(device)
    try:
        plan = plan or preflight(config)
        ctx.barrier()  # every rank has checked the run folder before rank 0 writes to it
        return _Run(plan, device, ctx, progress if ctx.is_main else Progress(), cancel).run()
    finally:
        distributed.teardown(ctx)


class _Run:
    def __init__(self, plan: Plan, device: torch.device, ctx: distributed.DistContext, progress: Progress,
                 cancel: CancelToken):
        self.plan, self.config, self.device, self.ctx = plan, plan.config, device, ctx
        self.progress, self.cancel = progress, cancel
        self.run_dir = self.config.run_dir
        self.amp_dtype = None
        if self.config.amp and device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        elif self.config.amp:
            log.warning("mixed precision (--amp %s) needs CUDA; training in float32 on %s", self.config.amp, device)
        self.epoch = self.position = self.global_step = 0
        self.seconds_before = 0.0  # wall time of the run's earlier sessions (a resumed run continues its budget)
        self.loss_sum, self.loss_steps = 0.0, 0
        self.history: list[dict] = []
        self.best: dict | None = None

    # -- setup --------------------------------------------------------------------------------
    def _prepare_folder(self) -> None:
        if not self.ctx.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.config.overwrite and not self.config.resume:
            for name in RUN_ITEMS:
                item = self.run_dir / name
                if name != "cache" and item.is_dir():
                    shutil.rmtree(item)
                elif name != "cache" and item.exists():
                    item.unlink()

    def _main_rank_first(self, build):
        """``build(progress, cancel)`` on the main rank (which writes the cache entries, with progress
        and Cancel), then on the others, which find every entry written and only open it."""
        if self.ctx.is_main:
            out = build(self.progress, self.cancel)
        self.ctx.barrier()
        if not self.ctx.is_main:
            out = build(None, None)
        return out

    def _volumes(self, cases) -> list[CachedVolume]:
        preprocessing = self.model_config.preprocessing
        return self._main_rank_first(lambda progress, cancel: cache_cases(
            cases, preprocessing, self.config.cache_path, progress, cancel))

    def _setup(self) -> None:
        cfg, plan = self.config, self.plan
        self.label_ids = sorted(plan.train.organs)
        self.organs = [plan.train.organs[i] for i in self.label_ids]
        torch.manual_seed(cfg.seed)
        if cfg.resume:
            loaded = load_model(self.run_dir / RESUME_DIR)
        else:
            loaded = build_training_model(cfg, self.organs)
        self.tokenizer, self.model_config = loaded.tokenizer, loaded.config
        self._setup_finetune(loaded)
        self.model: TGatedCLIPSeg = loaded.model.to(self.device)
        self._prepare_folder()  # only now: a base that fails to load leaves an earlier run untouched

        self.progress.info(message=f"preparing {len(plan.train.cases)} training and {len(plan.val.cases)} validation "
                                   f"volume(s) (cache: {cfg.cache_path})")
        all_cases = list({c.case_id: c for c in plan.train.cases + plan.val.cases}.values())
        cached = dict(zip([c.case_id for c in all_cases], self._volumes(all_cases)))
        self.train_volumes = [cached[c.case_id] for c in plan.train.cases]
        self.val_volumes = [(c, cached[c.case_id]) for c in plan.val.cases]

        trained_ids = [[i for i in plan.train.scored_ids(c) if i in plan.train.organs] for c in plan.train.cases]
        self.index = SampleIndex([v.presence for v in self.train_volumes], trained_ids, plan.train.organs)
        prompt_of = {label: n for n, label in enumerate(self.label_ids)}
        workers = cfg.num_workers if cfg.num_workers is not None else (2 if self.device.type == "cuda" else 0)
        pin = self.device.type == "cuda"
        if cfg.batching == "slices":
            self.sampler = self._chunk_sampler(trained_ids)
            dataset = ChunkDataset(self.train_volumes, self.model_config.preprocessing, self.model.context_size,
                                   trained_ids, prompt_of, self._token_cache() if cfg.token_cache else None)
            self.loader = make_chunk_loader(dataset, self.sampler, workers, pin_memory=pin)
        else:
            self.sampler = WindowSampler(self.index, cfg.batch_size, cfg.seed, cfg.negative_ratio,
                                         cfg.samples_per_epoch, cfg.max_rotation, cfg.flip_probability,
                                         self.ctx.rank, self.ctx.world_size)
            dataset = WindowDataset(self.train_volumes, self.model_config.preprocessing, self.model.context_size,
                                    prompt_of)
            self.loader = make_loader(dataset, self.sampler, workers, pin_memory=pin)
        ids, mask = tokenize(self.tokenizer, [o.prompt for o in self.organs], self.device)  # one row per label id

        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_schedule(self.optimizer, cfg)
        self.step = StepRunner(self.model, self.optimizer, cfg, ids, mask, net=distributed.wrap(self.model, self.ctx),
                               amp_dtype=self.amp_dtype)
        self.scaler = self.step.scaler
        # Dropout / drop-path streams differ per rank; weights are rank 0's (DDP broadcasts them).
        torch.manual_seed(cfg.seed * 1009 + 17 + self.ctx.rank)
        if cfg.resume:
            self._load_state()

    def _chunk_sampler(self, trained_ids: list[list[int]]) -> ChunkSampler:
        """Chunks of ``chunk_slices`` centres, ``batch_size // chunk_slices`` a step; anchors weighted
        towards organ boundaries and the dataset's hard slices (``chunks.slice_weights``)."""
        cfg = self.config
        weights = [slice_weights(v.presence, ids, 2, cfg.boundary_weight, v.canonical_slices(case.hard_slices),
                                 cfg.hint_weight)
                   for v, ids, case in zip(self.train_volumes, trained_ids, self.plan.train.cases)]
        depths = [v.depth for v in self.train_volumes]
        epoch = cfg.samples_per_epoch or max(1, math.ceil(sum(depths) / cfg.chunk_slices))  # each slice once, on average
        augmentation = ChunkAugmentation(cfg.max_rotation, cfg.max_zoom, cfg.intensity)
        return ChunkSampler(depths, weights, cfg.chunk_slices, max(1, cfg.batch_size // cfg.chunk_slices), epoch,
                            cfg.seed, augmentation, self.ctx.rank, self.ctx.world_size)

    def _token_cache(self) -> list:
        """``--token-cache``: the frozen encoder's output for every training slice, on disk (built once)."""
        if self.model.vision_needs_grad:
            raise InputError("--token-cache needs a frozen vision encoder (cached tokens cannot train it)",
                             "Add --finetune decoder or --finetune adapters (without dense vision PEFT), or leave "
                             "--token-cache out.")
        codec = SliceCodec(self.model_config.preprocessing, self.device, self.model.dtype)
        self.progress.info(message="caching the frozen encoder's tokens of every training slice (once)")
        return self._main_rank_first(lambda progress, cancel: build_token_cache(
            self.model, self.train_volumes, codec, self.config.val_batch_size, progress, cancel))

    def _setup_finetune(self, loaded: LoadedModel) -> None:
        """Freeze per ``finetune`` and decide what the checkpoints store (all or the trained weights)."""
        cfg, model = self.config, loaded.model
        trained = set(model.set_finetune(cfg.finetune))  # also: vision encoder under no_grad if allowed
        trained -= freeze_zero_rate_parts(model, cfg)
        if not trained:
            from ..errors import InputError

            raise InputError(f"--finetune {cfg.finetune} leaves nothing to train in this model",
                             "Add --peft dense|shallow, or use --finetune decoder or full.")
        state_keys = list(model.state_dict())
        self.saved_keys = None  # None: full weights
        self.fingerprint = None
        note = "all weights"
        if cfg.finetune != "full":
            saved = {k for k in state_keys if not k.startswith("base_model.") or k in trained}
            if cfg.resume:
                raw = json.loads((self.run_dir / RESUME_DIR / "config.json").read_text(encoding="utf-8"))
                identity = loaded.config.base_model_id if raw.get("partial_weights") else None
                note = ((loaded.config.training or {}).get("weights") or {}).get("note", "")
            else:
                identity, note = checkpoint_identity(cfg, loaded, set(state_keys) - saved)
            if identity is None:
                log.warning("--finetune %s: checkpoints keep all weights, because %s", cfg.finetune, note)
            else:
                self.saved_keys = saved
                self.model_config.base_model_id = identity
                self.fingerprint = base_fingerprint(model, saved)
        self.weights_info = {
            "finetune": cfg.finetune,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "parameters": sum(p.numel() for p in model.parameters()),
            "vision_encoder_no_grad": model.vision_without_grad,
            "stored": "trained parameters only" if self.saved_keys is not None else "all weights",
            "base": self.model_config.base_model_id if self.saved_keys is not None else None,
            "note": note,
        }

    def _save(self, folder: Path, config, extra_files: dict | None = None) -> None:
        """A checkpoint folder: all weights, or only the trained ones on top of the base's identity."""
        if self.saved_keys is None:
            save_checkpoint(self.model, self.tokenizer, folder, config, extra_files=extra_files)
            return
        state = {k: v for k, v in self.model.state_dict().items() if k in self.saved_keys}
        save_checkpoint(self.model, self.tokenizer, folder, config, state_dict=state, partial_weights=True,
                        extra_files=extra_files, base_fingerprint=self.fingerprint)

    # -- state ----------------------------------------------------------------------------------
    def _rng_state(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _counters(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "global_step": self.global_step,
                "skipped_steps": self.step.skipped, "loss_sum": self.loss_sum, "loss_steps": self.loss_steps,
                "history": self.history, "best": self.best, "seconds": round(self.seconds(), 3)}

    def seconds(self) -> float:
        """Wall time of the run so far, over all its sessions: what ``max_seconds`` and the cosine budget count."""
        return self.seconds_before + time.monotonic() - self._start

    def _load_state(self) -> None:
        folder = self.run_dir / RESUME_DIR
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        counters = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))["counters"]
        for key in ("epoch", "position", "global_step", "loss_sum", "loss_steps", "history", "best"):
            setattr(self, key, counters[key])
        self.seconds_before = float(counters.get("seconds", 0.0))
        self.step.skipped = counters["skipped_steps"]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # e.g. a run saved before zero-rate parts were frozen had one group more
            raise InputError(f"the optimiser state in '{folder}' does not fit this version's parameter groups ({exc})",
                             "Resume it with the version that started it, or start the run again.") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved_world = int(state["sampler"].get("world_size", 1))
        rngs = state["rng"]
        if saved_world == self.ctx.world_size and len(rngs) == self.ctx.world_size:
            self.sampler.load_state_dict(state["sampler"])
            self._set_rng_state(rngs[self.ctx.rank])
        else:
            # the same samples done, counted in this world size's batches (at most one batch repeats)
            self.position = self.position * saved_world // self.ctx.world_size
            self.sampler.set_epoch(self.epoch, self.position)
            log.warning("resumed with %d process(es) instead of %d: the epoch continues from sample %d and the "
                        "dropout streams restart (not bit-identical to an uninterrupted run)", self.ctx.world_size,
                        saved_world, self.position * self.sampler.batch_size * self.ctx.world_size)

    def metadata(self, selected: str) -> dict:
        plan, cfg = self.plan, self.config
        settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "resume", "overwrite", "cache_dir")}
        done = [h for h in self.history if not h.get("partial")]
        return {
            "producer": "tgated train",
            "selected": selected,
            "recipe": cfg.recipe,
            "data": {"train": str(plan.train.root), "train_cases": [c.case_id for c in plan.train.cases],
                     "val": plan.val_label, "val_cases": [c.case_id for c in plan.val.cases],
                     "labels": {str(i): n for i, n in plan.train.label_names.items()}},
            "base": cfg.base,
            "temporal": self.model.temporal,
            "weights": self.weights_info,
            "settings": settings,
            "sampling": {**self.index.counts(), "epoch_size": self.sampler.epoch_size,
                         "steps_per_epoch": self.sampler.steps_per_epoch, "world_size": self.ctx.world_size},
            "epochs_completed": len(done),
            "step": self.global_step,
            "seconds": round(self.seconds(), 1),  # wall time of the run when this was saved (all sessions)
            "skipped_steps": self.step.skipped,
            "best": self.best,
            "history": self.history,
        }

    def _config_with(self, selected: str):
        config = copy.deepcopy(self.model_config)
        config.training = self.metadata(selected)
        return config

    def save_point(self) -> None:
        """last/ and resume/ at the current (epoch, position), each swapped in atomically."""
        rngs = self.ctx.all_gather(self._rng_state())
        if self.ctx.is_main:
            self._save(self.run_dir / LAST_DIR, self._config_with("last"))
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                     "sampler": {**self.sampler.state_dict(), "epoch": self.epoch, "position": self.position},
                     "rng": rngs}
            buffer = io.BytesIO()
            torch.save(state, buffer)
            run = {"config": self.config.to_dict(), "counters": self._counters()}
            self._save(self.run_dir / RESUME_DIR, self._config_with("resume"),
                       extra_files={STATE_FILE: buffer.getvalue(), RUN_FILE: json.dumps(run, indent=1)})
        self._last_save = time.monotonic()
        self.ctx.barrier()

    # -- validation -----------------------------------------------------------------------------
    def validate(self) -> dict:
        """Per-organ volumetric Dice on whole validation volumes (streaming engine, native grid)."""
        from ..evaluation.evaluate import ScoredCase, evaluate_segmenter
        from ..evaluation.metrics import summarize

        organs = self.plan.val.organs
        mine = self.val_volumes[self.ctx.rank::self.ctx.world_size]
        loaded = LoadedModel(self.model, self.tokenizer, self.model_config, "training")
        segmenter = Segmenter(loaded=loaded, device=self.device, batch_size=self.config.val_batch_size,
                              amp=self.config.amp if self.amp_dtype is not None else None)

        def cases():
            for case, volume in mine:
                ids = [i for i in self.plan.val.scored_ids(case) if i in organs]
                yield ScoredCase(case.case_id, volume.prepared(), volume.native_labels(),
                                 tuple(volume.geometry.spacing)[::-1], {i: organs[i] for i in ids})

        # in DDP a cancel must not leave the other ranks waiting in all_gather: finish, then stop
        cancel = self.cancel if not self.ctx.enabled else None
        try:
            rows = evaluate_segmenter(segmenter, cases(), metrics=("dice",), progress=self.progress, cancel=cancel,
                                      total=len(mine), stage="validate")
        finally:
            set_train_mode_for(self.model, self.config.finetune)
        rows = [r for part in self.ctx.all_gather(rows) for r in part]
        summary = summarize(rows)
        per_organ = {organ: stats["dice"] for organ, stats in summary["per_organ"].items()}
        return {"val_dice": per_organ, "val_mean_dice": summary["overall"]["dice"], "val_cases": len(self.val_volumes)}

    # -- loop -----------------------------------------------------------------------------------
    def _stop_requested(self) -> str | None:
        cfg = self.config
        reasons = {
            "cancel": self.cancel.cancelled,
            "steps": cfg.steps is not None and self.global_step >= cfg.steps,
            "time": cfg.max_seconds is not None and self.seconds() >= cfg.max_seconds,
        }
        flags = self.ctx.any_of(list(reasons.values()))  # one collective: all ranks stop together
        return next((name for name, flag in zip(reasons, flags) if flag), None)

    def _save_due(self) -> bool:
        cfg = self.config
        due = bool(cfg.save_every_steps and self.global_step % cfg.save_every_steps == 0)
        if cfg.save_every_minutes:
            due = due or time.monotonic() - self._last_save >= 60.0 * cfg.save_every_minutes
        return self.ctx.any_of([due])[0]

    def _end_epoch(self, partial: bool) -> None:
        started = time.monotonic()
        try:
            result = self.validate()
        except Cancelled:
            self.save_point()  # the epoch's steps are kept; resuming validates it first
            raise
        loss = self.ctx.mean(self.loss_sum / self.loss_steps) if self.loss_steps else math.nan
        entry = {"epoch": self.epoch + 1, "step": self.global_step, "train_loss": loss,
                 "lr": {g["name"]: g["lr"] for g in self.optimizer.param_groups}, **result,
                 "validation_seconds": round(time.monotonic() - started, 2)}
        if partial:
            entry["partial"] = True
        self.history.append(entry)
        score = result["val_mean_dice"]
        score = score if isinstance(score, float) and math.isfinite(score) else -1.0
        improved = self.best is None or score > self.best["score"]
        if improved:
            self.best = {"epoch": self.epoch + 1, "step": self.global_step, "score": score,
                         "val_mean_dice": result["val_mean_dice"]}
        if not partial:
            self.epoch, self.position = self.epoch + 1, 0
            self.loss_sum, self.loss_steps = 0.0, 0
        if improved and self.ctx.is_main:
            self._save(self.run_dir / BEST_DIR, self._config_with("best"))
        self.save_point()
        self.progress.info(kind="epoch", epoch=entry["epoch"], epochs=self.config.epochs, step=self.global_step,
                           train_loss=loss, val_mean_dice=result["val_mean_dice"], val_dice=result["val_dice"],
                           best_epoch=self.best["epoch"], partial=partial,
                           message=f"epoch {entry['epoch']}/{self.config.epochs}{' (partial)' if partial else ''}: "
                                   f"loss {loss:.4f}, validation mean Dice {_fmt(result['val_mean_dice'])}"
                                   f"{' (best)' if improved else ''}")

    def _budget_spent(self) -> bool:
        cfg = self.config
        return self.epoch >= cfg.epochs or (cfg.steps is not None and self.global_step >= cfg.steps)

    def run(self) -> Path:
        cfg = self.config
        self._setup()
        self._start = self._last_save = time.monotonic()
        if not cfg.resume:
            self.save_point()  # resume/ and last/ exist from the first moment
        w = self.weights_info
        self.progress.info(message=f"fine-tuning '{cfg.finetune}': {w['trainable_parameters']:,} of "
                                   f"{w['parameters']:,} parameters trained; checkpoints store {w['stored']}"
                                   + (f" ({w['note']})" if cfg.finetune != "full" else ""))
        self.progress.info(message=f"training {'T-Gated' if self.model.temporal else 'baseline'} on {self.device}"
                                   f"{f' x {self.ctx.world_size} processes' if self.ctx.enabled else ''}: "
                                   f"{self.sampler.epoch_size} samples/epoch ({self.index.counts()['positives']} "
                                   f"positive and {self.index.counts()['negatives']} negative pairs), "
                                   f"{self.sampler.steps_per_epoch} steps/epoch, epochs {self.epoch + 1}..{cfg.epochs}")
        if self._budget_spent():
            self.progress.info(kind="done", run_dir=str(self.run_dir), message=f"nothing left to do in {self.run_dir}: "
                               f"{self.epoch} of {cfg.epochs} epochs and {self.global_step} steps done (raise --epochs "
                               f"or --steps to continue)")
            return self.run_dir
        throttle = Throttle(self.progress, 0.25)
        while self.epoch < cfg.epochs:
            steps = self.sampler.steps_per_epoch
            self.sampler.set_epoch(self.epoch, self.position)
            set_train_mode_for(self.model, cfg.finetune)
            stop = None
            for batch in self.loader:
                stop = self._stop_requested()
                if stop:
                    break
                self.scheduler.step(self.epoch + self.position / steps, self.global_step, self.seconds())
                loss = self.step(batch)
                self.position += 1
                self.global_step += 1
                self.loss_sum += loss
                self.loss_steps += 1
                throttle.update("train", self.position, steps, epoch=self.epoch + 1, epochs=cfg.epochs,
                                step=self.global_step, loss=round(loss, 5))
                if self.position < steps and self._save_due():
                    self.save_point()
            if stop == "cancel":
                self.save_point()
                raise Cancelled("training cancelled")
            self._end_epoch(partial=stop is not None)
            if stop is None and self._stop_requested() in ("steps", "time"):
                stop = "budget"
            if stop is not None:
                break
        best = self.best or {}
        self.progress.info(kind="done", run_dir=str(self.run_dir), best_epoch=best.get("epoch"),
                           best_val_mean_dice=best.get("val_mean_dice"), step=self.global_step,
                           message=f"finished after {self.global_step} steps; best epoch {best.get('epoch')} "
                                   f"(validation mean Dice {_fmt(best.get('val_mean_dice'))}); "
                                   f"checkpoints in {self.run_dir}")
        return self.run_dir


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "n/a"
