"""The run folder: ``best/``, ``last/`` and ``resume/``, and what their checkpoints store.

``best/`` and ``last/`` are checkpoint folders with the training metadata in ``config.json``
("training"); ``resume/`` is one too, plus ``state.pt`` (optimiser, scheduler, RNG, counters) and
``run.json`` (settings and counters, readable without torch). Every folder is written through
:func:`save_checkpoint`, i.e. swapped in atomically, so a kill at any moment leaves complete
folders. In the frozen ``finetune`` modes they store only the trained parameters, on top of the
base's identity (:func:`checkpoint_identity`). The folder names are :mod:`.preflight`'s, which
checks the folder before torch is imported.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InputError
from ..model.checkpoint import LoadedModel, base_fingerprint, load_base_model, save_checkpoint
from .config import TrainConfig
from .optim import freeze_zero_rate_parts
from .preflight import LAST_DIR, RESUME_DIR, RUN_FILE, RUN_ITEMS

if TYPE_CHECKING:
    from ..model.configuration import TGatedConfig
    from ..model.modeling import TGatedCLIPSeg
    from .chunks import ChunkSampler
    from .distributed import DistContext
    from .preflight import Plan
    from .sampling import SampleIndex, WindowSampler
    from .step import StepRunner

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"


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
            same = all(
                k.removeprefix("base_model.") in reference
                and torch.equal(state[k].cpu(), reference[k.removeprefix("base_model.")])
                for k in frozen_keys
            )
            if same:
                return named, f"on top of '{named}' (the base of '{base}'; its frozen weights are that base's)"
            why = f"its frozen weights differ from those of its base '{named}'"
        except Exception as exc:  # not reachable (offline hub id, moved folder): fall back to the checkpoint itself
            why = f"its base '{named}' cannot be loaded here ({type(exc).__name__})"
    else:
        why = "it names no CLIPSeg base"
    return base, f"on top of the checkpoint '{base}' ({why})"


class RunFolderMixin:
    """The run-folder half of a training run (:class:`trainer._Run`): preparing the folder,
    deciding what checkpoints store, writing ``last/``/``resume/``/``best/`` and reading
    ``resume/`` back.

    Uses the run's attributes: ``plan``, ``config``, ``ctx``, ``device``, ``run_dir``, ``model``,
    ``tokenizer``, ``model_config``, ``optimizer``, ``scheduler``, ``scaler``, ``sampler``,
    ``step``, ``index``, the counters (``epoch``, ``position``, ``global_step``, ``loss_sum``,
    ``loss_steps``, ``history``, ``best``, ``seconds_before``) and ``seconds()``.
    """

    # what the run sets up (trainer._Run.__init__ and _setup), declared for the type checker
    plan: Plan
    config: TrainConfig
    ctx: DistContext
    device: torch.device
    run_dir: Path
    model: TGatedCLIPSeg
    tokenizer: Any
    model_config: TGatedConfig
    optimizer: torch.optim.Optimizer
    scheduler: Any  # schedule.make_schedule's
    scaler: Any  # a GradScaler for float16 on CUDA, else None
    sampler: WindowSampler | ChunkSampler
    step: StepRunner
    index: SampleIndex
    epoch: int
    position: int
    global_step: int
    loss_sum: float
    loss_steps: int
    history: list[dict]
    best: dict | None
    seconds_before: float

    def seconds(self) -> float:  # the run's (trainer._Run.seconds)
        raise NotImplementedError

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

    def _setup_finetune(self, loaded: LoadedModel) -> None:
        """Freeze per ``finetune`` and decide what the checkpoints store (all or the trained weights)."""
        cfg, model = self.config, loaded.model
        trained = set(model.set_finetune(cfg.finetune))  # also: vision encoder under no_grad if allowed
        trained -= freeze_zero_rate_parts(model, cfg)
        if not trained:
            from ..errors import InputError

            raise InputError(
                f"--finetune {cfg.finetune} leaves nothing to train in this model",
                "Add --peft dense|shallow, or use --finetune decoder or full.",
            )
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
        save_checkpoint(
            self.model,
            self.tokenizer,
            folder,
            config,
            state_dict=state,
            partial_weights=True,
            extra_files=extra_files,
            base_fingerprint=self.fingerprint,
        )

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
        return {
            "epoch": self.epoch,
            "position": self.position,
            "global_step": self.global_step,
            "skipped_steps": self.step.skipped,
            "loss_sum": self.loss_sum,
            "loss_steps": self.loss_steps,
            "history": self.history,
            "best": self.best,
            "seconds": round(self.seconds(), 3),
        }

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
            raise InputError(
                f"the optimiser state in '{folder}' does not fit this version's parameter groups ({exc})",
                "Resume it with the version that started it, or start the run again.",
            ) from None
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
            log.warning(
                "resumed with %d process(es) instead of %d: the epoch continues from sample %d and the "
                "dropout streams restart (not bit-identical to an uninterrupted run)",
                self.ctx.world_size,
                saved_world,
                self.position * self.sampler.batch_size * self.ctx.world_size,
            )

    def metadata(self, selected: str) -> dict:
        plan, cfg = self.plan, self.config
        settings = {k: v for k, v in cfg.to_dict().items() if k not in ("output", "resume", "overwrite", "cache_dir")}
        done = [h for h in self.history if not h.get("partial")]
        return {
            "producer": "tgated train",
            "selected": selected,
            "recipe": cfg.recipe,
            "data": {
                "train": str(plan.train.root),
                "train_cases": [c.case_id for c in plan.train.cases],
                "val": plan.val_label,
                "val_cases": [c.case_id for c in plan.val.cases],
                "labels": {str(i): n for i, n in plan.train.label_names.items()},
            },
            "base": cfg.base,
            "temporal": self.model.temporal,
            "weights": self.weights_info,
            "settings": settings,
            "sampling": {
                **self.index.counts(),
                "epoch_size": self.sampler.epoch_size,
                "steps_per_epoch": self.sampler.steps_per_epoch,
                "world_size": self.ctx.world_size,
            },
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
        # calibrated thresholds belong to the weights they were chosen for: those of the latest
        # validation, if no step has been taken since (a base's, or a mid-epoch save's, get none)
        latest = self.history[-1] if self.history else {}
        fresh = "thresholds" in latest and latest.get("step") == self.global_step
        config.organ_thresholds = dict(latest["thresholds"]) if fresh else {}
        return config

    def save_point(self) -> None:
        """last/ and resume/ at the current (epoch, position), each swapped in atomically."""
        rngs = self.ctx.all_gather(self._rng_state())
        if self.ctx.is_main:
            self._save(self.run_dir / LAST_DIR, self._config_with("last"))
            state = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "sampler": {**self.sampler.state_dict(), "epoch": self.epoch, "position": self.position},
                "rng": rngs,
            }
            buffer = io.BytesIO()
            torch.save(state, buffer)
            run = {"config": self.config.to_dict(), "counters": self._counters()}
            self._save(
                self.run_dir / RESUME_DIR,
                self._config_with("resume"),
                extra_files={STATE_FILE: buffer.getvalue(), RUN_FILE: json.dumps(run, indent=1)},
            )
        self._last_save = time.monotonic()
        self.ctx.barrier()
