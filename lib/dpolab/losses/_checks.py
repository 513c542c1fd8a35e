"""Input checks shared by every loss module.

Each helper raises a ``ValueError`` whose message starts with the argument's name, so a
student (or a training script) sees at once *which* tensor is wrong and how.
"""

from __future__ import annotations

import torch

HALF_DTYPES = (torch.float16, torch.bfloat16)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in at least float32: half precision is upcast, float64 stays float64.

    Log-probabilities of long sequences are sums of hundreds of terms; in float16 or
    bfloat16 those sums (and exp/log of them) lose most of their digits.
    """
    if x.dtype in HALF_DTYPES:
        return x.float()
    return x


def check_float(name: str, x: torch.Tensor, ndim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(x.shape)}")


def check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def check_token_inputs(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_mask: torch.Tensor | None = None,
    prefix: str = "",
) -> None:
    """Check a (logits, labels, loss_mask) triple for the log-prob extraction."""
    n_logits, n_labels, n_mask = f"{prefix}logits", f"{prefix}labels", f"{prefix}loss_mask"
    check_float(n_logits, logits, ndim=3)
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{n_labels} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{n_labels} must hold integer token ids, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"{n_labels} must have shape (batch, seq_len) = {tuple(logits.shape[:2])} "
            f"to match {n_logits} {tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    if loss_mask is not None:
        if not isinstance(loss_mask, torch.Tensor):
            raise ValueError(f"{n_mask} must be a torch.Tensor, got {type(loss_mask).__name__}")
        if loss_mask.shape != labels.shape:
            raise ValueError(
                f"{n_mask} must have the shape of {n_labels} {tuple(labels.shape)}, "
                f"got {tuple(loss_mask.shape)}"
            )


def check_per_example(*named: tuple[str, torch.Tensor]) -> None:
    """Check 1-D float tensors of per-example values that must share one batch size."""
    first_name, first = named[0]
    for name, x in named:
        check_float(name, x, ndim=1)
        if x.shape != first.shape:
            raise ValueError(
                f"{name} must have the shape of {first_name} {tuple(first.shape)}, got {tuple(x.shape)}"
            )


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
