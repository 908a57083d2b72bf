"""Inference precision: which arithmetic the engine runs the model in, chosen in this one place.

``--precision`` (CLI) / ``precision=`` (``Segmenter``, the warm backend):

* ``fp32``: float32 throughout, the reference numbers (what every version before issue 12 ran).
* ``int8`` (CPU): the linear layers of the vision encoder and the temporal adapter (about 95 % of
  a volume's arithmetic) as dynamically quantised int8 (``torch.ao.quantization.quantize_dynamic``:
  int8 weights per tensor, activations quantised per call). The text encoder (run once per prompt)
  and the small decoder stay float32, so prompt embeddings are unchanged. Quantising costs about as
  much as encoding two slices, so volumes of fewer than :data:`INT8_MIN_SLICES` slices run in
  float32 (a one-slice ``tgated segment`` would only get slower). An activation's int8 scale is
  taken over the whole batch of slices, so results depend (slightly) on ``batch_size`` too; the
  model is quantised in place, so ``Segmenter.model`` then holds int8 layers (ask for ``fp32`` to
  inspect or change float weights). ONNX Runtime's dynamic int8 encoder was measured against this
  one on the same CPU (``benchmarks/results/inference_speed.md``, Run 4): no faster within the
  noise and no more accurate, so there is no second runtime to export to.
* ``bf16``: bfloat16 autocast, on CPUs with native bfloat16 arithmetic (AMX or AVX512-BF16; elsewhere
  it is emulated and slower than float32) and on CUDA.
* ``fp16``: float16 autocast (CUDA).
* ``auto`` (the default): CPU: ``bf16`` where the CPU has native bfloat16, else ``int8``; CUDA:
  ``fp32`` (the mixed-precision modes are one flag away, but their agreement with fp32 has not been
  measured on a GPU here). A model handed in by its caller (``Segmenter(loaded=...)``, e.g. the
  trainer's validation) always stays ``fp32``: quantising works in place.

Agreement of ``int8`` with ``fp32`` (Dice change, voxel agreement) and its speed-up are measured by
``benchmarks/inference_speed.py`` and tested on a small trained model (``Testing/test_precision.py``).
"""

from __future__ import annotations

import os
import warnings

from ..errors import InputError

# torch is imported inside the functions: the CLI lists PRECISIONS in its --help without loading it
PRECISIONS = ("auto", "fp32", "int8", "bf16", "fp16")
INT8_MIN_SLICES = 3  # quantising costs ~0.75 s CPU (real-size encoder), int8 saves ~0.35 s CPU per slice


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bfloat16 matrix arithmetic in hardware (elsewhere it is emulated, and slower)."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(requested: str | None, device, caller_model: bool = False) -> str:
    """``auto`` or an explicit choice -> the precision the engine runs (``fp32``/``int8``/``bf16``/``fp16``),
    with a clear error for a choice this device cannot run."""
    name = (requested or "auto").lower()
    if name not in PRECISIONS:
        raise InputError(f"unknown precision '{requested}'", f"Use one of: {', '.join(PRECISIONS)}.")
    cuda = device.type == "cuda"
    if name == "auto":
        if caller_model or device.type not in ("cpu", "cuda"):
            return "fp32"
        return "fp32" if cuda else ("bf16" if cpu_has_native_bf16() else "int8")
    if name == "int8" and cuda:
        raise InputError(
            "int8 is a CPU precision (dynamic quantisation has no CUDA kernels)",
            "On a GPU use --precision fp16 or bf16 (or fp32).",
        )
    if name == "fp16" and not cuda:
        raise InputError(
            "fp16 runs on CUDA only (CPUs have no fast float16 arithmetic)",
            "On a CPU use --precision auto, int8 or fp32.",
        )
    if name == "int8" and caller_model:
        raise InputError(
            "int8 quantises the model in place, and this model belongs to its caller",
            "Let the Segmenter load the checkpoint itself, or use fp32.",
        )
    return name


def autocast_dtype(precision: str):
    """The autocast dtype of ``precision`` (None: the model's own float32)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def quantize_int8(model) -> None:
    """Swap the vision encoder's and the adapter's ``nn.Linear`` layers for dynamically quantised
    int8 ones, in place (see the module docstring for what stays float32 and why)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    parts = [model.base_model.clip.vision_model] + ([model.adapter] if model.adapter is not None else [])
    with warnings.catch_warnings():  # torch >= 2.10 points eager quantisation users to torchao
        warnings.simplefilter("ignore")
        for part in parts:
            quantize_dynamic(part, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def use_all_cores() -> int:
    """Intra-op threads: one per physical core this process may run on.

    PyTorch's default is one per physical core of the whole machine, which oversubscribes a
    process confined to fewer (a container, an affinity mask): OpenMP threads then wait on each
    other and a 2-core share runs several times slower. More threads than physical cores
    (hyper-threads) do not speed up matrix arithmetic. OMP_NUM_THREADS / MKL_NUM_THREADS, when set,
    win. Returns the thread count in use."""
    import torch

    if not any(os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        try:
            allowed = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # macOS, Windows: no affinity masks
            allowed = torch.get_num_threads()
        if allowed < torch.get_num_threads():
            torch.set_num_threads(max(1, allowed))
    return torch.get_num_threads()


# The commands whose OpenMP threads sleep while they wait (see passive_waiting_threads).
PASSIVE_WAIT_COMMANDS = ("segment", "serve", "evaluate")


def passive_waiting_threads(argv: list[str] | None = None) -> None:
    """OpenMP threads that sleep when they run out of work, instead of spinning (``OMP_WAIT_POLICY=
    PASSIVE``), for the inference commands (``argv``: the command line after the program name; None:
    whatever the command), unless the environment already says otherwise.

    PyTorch's OpenMP threads spin for a while at every barrier. On a machine shared with other work
    (a loaded server, Slicer's own threads) a spinning thread holds a core that the thread it waits
    for needs: on a 2-core machine under load, the text encoder of 13 prompts took 3-5 s instead of
    0.3 s, and a slice's encoder 10 s instead of 4-5 s (issue 12). Training is the exception: its
    steps are many small operations, and sleeping at each barrier costs more than it saves; on the
    same machine, idle, ``tgated demo --minutes 1`` made 134 and 123 steps with spinning threads and
    101 and 94 with sleeping ones (1.3x). So ``train``, ``demo`` and the others keep OpenMP's
    default. OpenMP reads the variable once, when PyTorch loads: this must run before ``import
    torch``, hence in the command line's entry point.
    """
    if argv is not None:
        command = next((word for word in argv if not word.startswith("-")), None)
        if command not in PASSIVE_WAIT_COMMANDS:
            return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
