r"""Log-probabilities of a response under a causal language model.

A causal LM's logits at position ``t`` are its prediction for token ``t + 1``. The
log-probability of a response ``y`` given a prompt ``x`` is therefore

.. math::

    \log \pi(y \mid x) = \sum_{t} m_{t+1} \, \log \mathrm{softmax}(z_t)[\,\ell_{t+1}\,]

where ``z`` are the logits, ``ℓ`` the token ids (prompt and response concatenated) and
``m`` the **loss mask**: 1 on response tokens, 0 on prompt and padding. The attention
mask is *not* the loss mask: it is 1 on the prompt too, and summing prompt tokens gives
wrong rewards (and wrong KTO, ORPO and SimPO losses).

``log softmax(z)[ℓ] = z[ℓ] - logsumexp(z)``, so we never need the full (B, T, V) table of
log-probabilities: one logsumexp and one gather per position suffice. We process the
rows in chunks so that temporaries stay small, and write the backward pass by hand
(``∂/∂z = g · (onehot(ℓ) - softmax(z))``) so autograd keeps no upcast copy of the logits.
"""

from __future__ import annotations

import torch

from .._checks import check_token_inputs, upcast

# Logits handled at once, in elements: 1M (4 MiB in float32) stays in a CPU's cache;
# a GPU prefers fewer, larger kernel launches, so it takes 64 times more.
_CHUNK_ELEMENTS = 1 << 20
_ACCELERATOR_FACTOR = 64


class _SelectedLogSoftmax(torch.autograd.Function):
    """``log_softmax(logits)[index]`` row by row, computed in >= float32, chunked."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor, chunk_rows: int):
        out_dtype = torch.promote_types(logits.dtype, torch.float32)  # >= float32
        logps = torch.empty(logits.shape[0], dtype=out_dtype, device=logits.device)
        lse = torch.empty_like(logps)
        for start in range(0, logits.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            z = upcast(logits[rows])
            lse[rows] = torch.logsumexp(z, dim=-1)
            logps[rows] = z.gather(-1, index[rows, None]).squeeze(-1) - lse[rows]
        ctx.save_for_backward(logits, index, lse)
        ctx.chunk_rows = chunk_rows
        return logps

    @staticmethod
    def backward(ctx, grad_logps: torch.Tensor):
        logits, index, lse = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            g = grad_logps[rows, None]
            # d/dz [z[l] - logsumexp(z)] = onehot(l) - softmax(z)
            chunk_grad = torch.exp(upcast(logits[rows]) - lse[rows, None]).mul_(-g)
            chunk_grad.scatter_add_(-1, index[rows, None], g)
            grad[rows] = chunk_grad
        return grad, None, None


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits[b, t])[targets[b, t]]`` for every position, shape (B, T).

    No shift here: ``targets[b, t]`` is the token scored by ``logits[b, t]``. The result is
    float32 for half-precision logits (float64 stays float64). Peak extra memory is one
    chunk of about 1M elements (64M on a GPU) instead of a second (B, T, V) tensor.
    """
    batch, seq_len, vocab = logits.shape
    flat_logits = logits.reshape(batch * seq_len, vocab)  # a view when contiguous
    chunk = _CHUNK_ELEMENTS * (1 if logits.device.type == "cpu" else _ACCELERATOR_FACTOR)
    chunk_rows = max(1, chunk // vocab)
    flat = _SelectedLogSoftmax.apply(flat_logits, targets.reshape(-1), chunk_rows)
    return flat.view(batch, seq_len)


def shift_for_next_token(labels: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets and mask aligned with the logits: position t scores token t + 1.

    The last position predicts nothing (mask 0). Masked targets are set to 0 so that
    any placeholder id (such as -100) is still a valid index.
    """
    mask = loss_mask.bool()
    next_mask = torch.zeros_like(mask)
    next_mask[:, :-1] = mask[:, 1:]
    next_labels = torch.zeros_like(labels)
    next_labels[:, :-1] = labels[:, 1:]
    next_labels = next_labels.masked_fill(~next_mask, 0)
    return next_labels, next_mask


def sequence_logps(
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss_mask: torch.Tensor,
    average: bool = False,
) -> torch.Tensor:
    r"""Per-sequence log-probability of the masked (response) tokens, shape (B,).

    ``average=False``: :math:`\sum_t m_{t+1} \log p(\ell_{t+1} \mid \ell_{\le t})`
    (DPO, IPO, KTO). ``average=True``: the same sum divided by the number of response
    tokens (ORPO, SimPO). A row whose mask is empty gives 0, not NaN.

    Args:
        logits: (B, T, V) model outputs, any float dtype.
        labels: (B, T) integer token ids of prompt + response (padding anywhere masked).
        loss_mask: (B, T), 1/True on the response tokens, 0 on prompt and padding.
        average: divide by the number of response tokens.
    """
    check_token_inputs(logits, labels, loss_mask)
    next_labels, next_mask = shift_for_next_token(labels, loss_mask)
    vocab = logits.shape[-1]
    selected = next_labels[next_mask]
    if selected.numel() and (selected.min() < 0 or selected.max() >= vocab):
        raise ValueError(
            f"labels must be token ids in [0, {vocab}) on response tokens, "
            f"got values in [{int(selected.min())}, {int(selected.max())}]"
        )
    per_token = token_logps(logits, next_labels)
    # where, not multiply: a masked -inf must not turn into NaN (0 * -inf).
    per_token = torch.where(next_mask, per_token, torch.zeros_like(per_token))
    total = per_token.sum(dim=-1)
    if not average:
        return total
    return total / response_token_counts(loss_mask).clamp(min=1)


def response_token_counts(loss_mask: torch.Tensor) -> torch.Tensor:
    """Number of scored response tokens per row, shape (B,).

    Position 0 is never scored (no logit predicts it), hence ``loss_mask[:, 1:]``.
    """
    return loss_mask[:, 1:].bool().sum(dim=-1)
