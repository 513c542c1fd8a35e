"""Pick the device once, in one place.

Notebooks and scripts call :func:`get_device` instead of writing ``"cuda"`` or ``"cpu"``:
the same code runs on a laptop, on Colab's GPU and in CI. Set ``DPOLAB_DEVICE`` (for
example ``DPOLAB_DEVICE=cpu``) to override the choice.
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "DPOLAB_DEVICE"


def get_device(name: str | None = None) -> torch.device:
    """The device to use: ``name`` if given, else ``$DPOLAB_DEVICE``, else CUDA, MPS, CPU."""
    name = name or os.environ.get(ENV_VAR)
    if name:
        try:
            return torch.device(name)
        except RuntimeError as err:
            raise ValueError(f"{ENV_VAR} (or name) is not a torch device: {name!r}") from err
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
