"""How the demo (and the phantom ablations) train on phantoms: :class:`PhantomRecipe` and its two presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..phantom import PhantomSpec


@dataclass(frozen=True)
class PhantomRecipe:
    """How the demo (and the phantom ablations) train a model on phantoms: a training recipe
    (:mod:`TGatedSegmentLib.training.recipes`, ``cpu`` by default) on a phantom series.

    ``steps`` fixes the amount of training, so two runs (two seeds, two arms of an ablation) get the
    same; ``max_seconds`` only caps a slow machine (the schedule then anneals over the time left).
    ``settings`` are :class:`TrainConfig` values that replace the recipe's.
    """

    n_train: int = 8  # training phantoms
    n_val: int = 1  # validation phantoms (best/ is chosen on them)
    spec: PhantomSpec = field(default_factory=PhantomSpec)
    recipe: str = "cpu"
    steps: int = 750
    epochs: int = 2  # validations (the last one at the end)
    max_seconds: float | None = 270.0
    settings: dict = field(default_factory=dict)

    def train_config(
        self,
        data,
        output,
        temporal: bool = True,
        seed: int = 0,
        device: str = "auto",
        base: str | None = None,
        max_seconds: float | None = None,
        **overrides,
    ):
        """The :class:`TrainConfig` of this recipe (``base``: fine-tune those weights, paper recipe)."""
        from dataclasses import replace

        from ..training import TrainConfig

        settings: dict[str, Any] = dict(
            data=str(data),
            output=str(output),
            val=f"split:{self.n_val}",
            recipe=self.recipe,
            temporal=temporal,
            epochs=self.epochs,
            steps=self.steps,
            device=device,
            num_workers=0,
            seed=seed,
            save_every_minutes=None,
            max_seconds=max_seconds if max_seconds is not None else self.max_seconds,
        )
        settings.update(self.settings)
        if base is not None:  # pretrained weights: their tokenizer, input size and the paper's recipe
            settings.update(base=base, recipe="paper")
        settings.update(overrides)
        config = TrainConfig(**settings)
        if "samples_per_epoch" not in {**self.settings, **overrides}:
            # an epoch is a validation interval: steps / epochs steps of pairs or of chunks, of the
            # steps this run is given (an override such as the equal-time arm's must not be cut
            # short by the recipe's own epoch length)
            per_step = config.batch_size // config.chunk_slices if config.batching == "slices" else config.batch_size
            steps = config.steps or self.steps
            config = replace(config, samples_per_epoch=max(1, steps * max(1, per_step) // config.epochs))
        return config

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return d


#: ``tgated demo``: under 5 minutes on a 2-core CPU (see docs/results.md).
DEMO_RECIPE = PhantomRecipe()
#: ``tgated demo --quick``: seconds; shows the pipeline works, not that the model learns.
QUICK_RECIPE = PhantomRecipe(
    n_train=2,
    n_val=1,
    spec=PhantomSpec(shape=(32, 64, 64), spacing=(5.0, 5.0, 5.0), target_slices=(6, 9), n_distractors=4),
    steps=12,
    epochs=1,
    max_seconds=None,
    settings={"image_size": 64, "batch_size": 4, "chunk_slices": 4, "warmup_steps": 2},
)
