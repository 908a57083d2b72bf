"""Training: datasets, the preprocessing cache, sampling, augmentation, losses and the trainer.

``from TGatedSegmentLib.training import TrainConfig, train`` is the Python entry point (the same
as ``tgated train``). ``train`` is imported lazily, so that the dataset checks work without torch.
"""

from .config import TrainConfig

__all__ = ["TrainConfig", "train", "resume_config"]


def __getattr__(name):
    if name == "train":
        from .trainer import train

        return train
    if name == "resume_config":
        from .preflight import resume_config

        return resume_config
    raise AttributeError(name)
