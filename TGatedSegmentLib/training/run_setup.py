"""Setting a training run up (:class:`trainer._Run`'s first part): the model, the cached volumes,
the sampler and loader, the optimiser, the schedule and the step."""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from ..model.checkpoint import load_model
from ..model.modeling import TGatedCLIPSeg
from ..model.tokenizer import tokenize
from ..preprocessing.slices import SliceCodec
from ..progress import CancelToken, Progress
from . import distributed
from .cache import CachedVolume, cache_cases
from .chunks import ChunkAugmentation, ChunkDataset, ChunkSampler, make_chunk_loader, slice_weights
from .optim import make_optimizer
from .preflight import RESUME_DIR
from .run_folder import RunFolderMixin
from .sampling import SampleIndex, WindowSampler
from .schedule import make_schedule
from .starting_model import build_training_model
from .step import StepRunner
from .token_cache import build_token_cache
from .windows import WindowDataset, make_loader


class RunSetupMixin(RunFolderMixin):
    """The setup of a training run (:class:`trainer._Run`): everything the loop and validation use."""

    # set by trainer._Run.__init__, declared for the type checker
    progress: Progress
    cancel: CancelToken
    amp_dtype: torch.dtype | None

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
        return self._main_rank_first(
            lambda progress, cancel: cache_cases(cases, preprocessing, self.config.cache_path, progress, cancel)
        )

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

        self.progress.info(
            message=f"preparing {len(plan.train.cases)} training and {len(plan.val.cases)} validation "
            f"volume(s) (cache: {cfg.cache_path})"
        )
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
            dataset = ChunkDataset(
                self.train_volumes,
                self.model_config.preprocessing,
                self.model.context_size,
                trained_ids,
                prompt_of,
                self._token_cache() if cfg.token_cache else None,
                self.sampler.augmentation,
            )
            self.loader = make_chunk_loader(dataset, self.sampler, workers, pin_memory=pin)
        else:
            self.sampler = WindowSampler(
                self.index,
                cfg.batch_size,
                cfg.seed,
                cfg.negative_ratio,
                cfg.samples_per_epoch,
                cfg.max_rotation,
                cfg.flip_probability,
                self.ctx.rank,
                self.ctx.world_size,
            )
            dataset = WindowDataset(
                self.train_volumes, self.model_config.preprocessing, self.model.context_size, prompt_of
            )
            self.loader = make_loader(dataset, self.sampler, workers, pin_memory=pin)
        ids, mask = tokenize(self.tokenizer, [o.prompt for o in self.organs], self.device)  # one row per label id

        self.optimizer = make_optimizer(self.model, cfg)
        self.scheduler = make_schedule(self.optimizer, cfg)
        self.step = StepRunner(
            self.model,
            self.optimizer,
            cfg,
            ids,
            mask,
            net=distributed.wrap(self.model, self.ctx),
            amp_dtype=self.amp_dtype,
        )
        self.scaler = self.step.scaler
        # Dropout / drop-path streams differ per rank; weights are rank 0's (DDP broadcasts them).
        torch.manual_seed(cfg.seed * 1009 + 17 + self.ctx.rank)
        if cfg.resume:
            self._load_state()

    def _chunk_sampler(self, trained_ids: list[list[int]]) -> ChunkSampler:
        """Chunks of ``chunk_slices`` centres, ``batch_size // chunk_slices`` a step; anchors weighted
        towards organ boundaries and the dataset's hard slices (``chunks.slice_weights``)."""
        cfg = self.config
        weights = [
            slice_weights(
                v.presence, ids, 2, cfg.boundary_weight, v.canonical_slices(case.hard_slices), cfg.hint_weight
            )
            for v, ids, case in zip(self.train_volumes, trained_ids, self.plan.train.cases)
        ]
        depths = [v.depth for v in self.train_volumes]
        epoch = cfg.samples_per_epoch or max(
            1, math.ceil(sum(depths) / cfg.chunk_slices)
        )  # each slice once, on average
        augmentation = ChunkAugmentation(
            cfg.max_rotation, cfg.max_zoom, cfg.intensity, cfg.organ_intensity, cfg.random_contrast
        )
        return ChunkSampler(
            depths,
            weights,
            cfg.chunk_slices,
            max(1, cfg.batch_size // cfg.chunk_slices),
            epoch,
            cfg.seed,
            augmentation,
            self.ctx.rank,
            self.ctx.world_size,
        )

    def _token_cache(self) -> list:
        """``--token-cache``: the frozen encoder's output for every training slice, on disk (built once)."""
        if self.model.vision_needs_grad:
            raise InputError(
                "--token-cache needs a frozen vision encoder (cached tokens cannot train it)",
                "Add --finetune decoder or --finetune adapters (without dense vision PEFT), or leave "
                "--token-cache out.",
            )
        codec = SliceCodec(self.model_config.preprocessing, self.device, self.model.dtype)
        self.progress.info(message="caching the frozen encoder's tokens of every training slice (once)")
        return self._main_rank_first(
            lambda progress, cancel: build_token_cache(
                self.model, self.train_volumes, codec, self.config.val_batch_size, progress, cancel
            )
        )
