r"""Supervised fine-tuning (SFT): maximise the likelihood of the demonstrated responses.

.. math::

    \mathcal{L}_\mathrm{SFT} = -\frac{1}{\sum_i |y_i|}\sum_i \log\pi_\theta(y_i \mid x_i)

the negative log-likelihood per *response* token (the prompt is given, not predicted):
the same loss mask as every preference loss in :mod:`dpolab.losses` (computed here without
them: the graded-course package trains its SFT model without the losses' reference). Whatever the
demonstrations do — right or wrong — the model learns to do, in proportion.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..data.batching import SequenceBatch, encode_examples, pad_sequences
from .generation import logits_of


def cosine_lr(step: int, steps: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def progress_bar(steps: int, enabled: bool, desc: str):
    """A ``tqdm.auto`` bar (a notebook widget in Jupyter, text elsewhere), or a plain range."""
    if not enabled:
        return range(steps)
    from tqdm.auto import trange

    return trange(steps, desc=desc, leave=False)


def sft_loss(model: Any, batch: SequenceBatch) -> torch.Tensor:
    r"""Token-mean negative log-likelihood of the response tokens of ``batch``.

    The logits :math:`z_t` at position ``t`` predict token ``t + 1``, so the loss is
    :math:`\frac{1}{\sum m_{t+1}}\sum_t m_{t+1}\,(\operatorname{logsumexp} z_t - z_t[\ell_{t+1}])`
    with ``m`` the loss mask and ``ℓ`` the token ids (computed in at least float32).
    """
    logits = logits_of(model(batch.input_ids, attention_mask=batch.attention_mask))
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    # The target of position t is token t + 1; the last position has none (mask 0, target 0).
    mask = torch.zeros_like(batch.loss_mask, dtype=torch.bool)
    mask[:, :-1] = batch.loss_mask[:, 1:].bool()
    targets = torch.zeros_like(batch.input_ids)
    targets[:, :-1] = batch.input_ids[:, 1:]
    targets = targets.masked_fill(~mask, 0)
    logps = z.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)
    per_row = torch.where(mask, logps, torch.zeros_like(logps)).sum(dim=-1)
    return -per_row.sum() / mask.sum(dim=-1).sum().clamp(min=1)


def train_sft(
    model: torch.nn.Module,
    examples: Sequence[tuple[str, str]],
    tokenizer: Any,
    *,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup: int = 20,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Fine-tune ``model`` on (prompt, response) ``examples``; returns the history ``{"step", "loss", "lr"}``.

    Each response is followed by the tokenizer's EOS, so the model learns where to stop.
    Batches are drawn at random (with a generator seeded by ``seed``; ``torch.manual_seed(seed)``
    is also set, for dropout). AdamW with warm-up and cosine decay. The model is moved to
    ``device`` (default: where it already is) and left in train mode.
    """
    if not examples:
        raise ValueError("examples must hold at least one (prompt, response) pair")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    torch.manual_seed(seed)
    model.to(device).train()
    prompts, responses = encode_examples(examples, tokenizer)
    # Pad every example once; each step only gathers rows (and crops trailing padding).
    data = pad_sequences(prompts, responses, pad_token_id=tokenizer.pad_token_id).to(device)
    lengths = data.attention_mask.sum(dim=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr(s, steps, min(warmup, steps))
    )
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"step": [], "loss": [], "lr": []}
    for step in progress_bar(steps, progress, "SFT"):
        rows = torch.randint(len(examples), (batch_size,), generator=generator).to(device)
        width = int(lengths[rows].max())
        batch = SequenceBatch(
            *(t[rows, :width] for t in (data.input_ids, data.attention_mask, data.loss_mask))
        )
        loss = sft_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["lr"].append(scheduler.get_last_lr()[0])
    return history
