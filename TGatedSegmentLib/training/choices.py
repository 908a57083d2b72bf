"""The fixed value sets of the training settings (:class:`config.TrainConfig` declares the options)."""

ADAPTER_CHOICES = ("residual", "reference", "control")  # control: the residual adapter fed 5 copies of the centre
BATCHINGS = ("pairs", "slices")
THRESHOLD_CHOICES = ("fixed", "calibrated")  # the checkpoint's decision thresholds (evaluation/calibration.py)

FINETUNE_MODES = ("full", "decoder", "adapters")
PEFT_VARIANTS = ("dense", "shallow")
PEFT_PARTS = ("vision", "text", "conditional")
# VLSM-Adapter's learning rates (scripts/finetune.py): 1e-3 for the dense adapters, 3e-4 for the shallow ones
DEFAULT_LR_PEFT = {"dense": 1e-3, "shallow": 3e-4}
