"""Build a model with no memory and no initialisation, for weights that all come from a checkpoint.

On PyTorch's ``meta`` device a module's constructor allocates nothing, but it still runs every
``reset_parameters``: on meta tensors ``nn.init.normal_`` goes through PyTorch's reference
implementations, whose first use imports ``torch._dynamo`` (about as long as ``import torch``
itself; issue 12). The initialisers are pointless there, so :func:`empty_weights` turns them into
no-ops for the duration of the construction.

transformers keeps its own references to them, taken when ``transformers.initialization`` is
first imported (``TORCH_INIT_FUNCTIONS``). That import must happen before the swap: imported
inside it, transformers would keep the no-ops for good, and every model built from random weights
later in the process (``tgated train`` after a checkpoint was loaded in the same Python, as the
Slicer module and the ablation benchmarks do) would skip transformers' initialisation.
"""

from __future__ import annotations

import contextlib
import threading

import torch

_LOCK = threading.Lock()  # the initialisers are module globals: one construction at a time swaps them


def _initialisers() -> list[str]:
    return [
        name
        for name in dir(torch.nn.init)
        if name.endswith("_") and not name.startswith("_") and callable(getattr(torch.nn.init, name))
    ]


def _import_transformers_initialisers() -> None:
    """Let transformers take its references to the real initialisers now (see the module docstring)."""
    import transformers.modeling_utils  # noqa: F401  (transformers 4: TORCH_INIT_FUNCTIONS lives here)

    try:
        import transformers.initialization  # noqa: F401  (transformers 5)
    except ImportError:  # pragma: no cover - transformers 4
        pass


@contextlib.contextmanager
def empty_weights():
    """``with empty_weights(): model = Model(config)``: parameters and buffers on ``meta``, never
    initialised; give them their values with ``load_state_dict(..., assign=True)``."""
    _import_transformers_initialisers()
    with _LOCK:
        saved = {name: getattr(torch.nn.init, name) for name in _initialisers()}
        try:
            for name in saved:
                setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
            with torch.device("meta"):
                yield
        finally:
            for name, fn in saved.items():
                setattr(torch.nn.init, name, fn)
