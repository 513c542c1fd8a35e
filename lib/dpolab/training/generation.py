"""Generate text with any causal LM that returns logits: greedy or sampled, token by token.

Works with :class:`~dpolab.training.model.TinyGPT` (logits tensor) and with Hugging Face
models (an output with ``.logits``). No KV cache: the lab's sequences are a few dozen
tokens, where recomputing the prefix costs little and keeps the loop short.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch


def logits_of(output: Any) -> torch.Tensor:
    """The logits tensor of a model's output: the tensor itself, or its ``.logits``."""
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ValueError(
            f"the model must return a logits tensor or an object with .logits, got {type(output).__name__}"
        )
    return logits


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    stop_token: int | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to each row of ``input_ids`` (B, T), all rows the same length.

    ``temperature=0``: greedy (argmax). ``> 0``: sample from ``softmax(logits / temperature)``
    with ``generator`` (on the device of ``input_ids``). A row that has produced
    ``stop_token`` keeps producing it; the loop ends early once every row has stopped.
    ``block_size`` crops the context to the last ``block_size`` tokens. The model's
    train/eval mode is restored afterwards.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
        raise ValueError(
            f"input_ids must be a (batch, seq_len) tensor, got {getattr(input_ids, 'shape', None)}"
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    was_training = model.training
    model.eval()
    ids = input_ids
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    try:
        for _ in range(max_new_tokens):
            context = ids if block_size is None else ids[:, -block_size:]
            logits = logits_of(model(context))[:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1)
            else:
                probs = torch.softmax(logits / temperature, dim=-1)
                next_id = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            if stop_token is not None:
                next_id = next_id.masked_fill(done, stop_token)
                done |= next_id == stop_token
            ids = torch.cat([ids, next_id[:, None]], dim=1)
            if stop_token is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)
    return ids


def complete(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    device: torch.device | str | None = None,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[str]:
    """The model's response (text up to EOS) to each prompt, in order.

    Prompts of the same length are generated as one batch (no padding needed).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    block_size = getattr(getattr(model, "config", None), "block_size", None)
    by_length: dict[int, list[int]] = defaultdict(list)
    encoded = [tokenizer.encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    responses: list[str] = [""] * len(prompts)
    for length, rows in sorted(by_length.items()):
        ids = torch.tensor([encoded[i] for i in rows], dtype=torch.long, device=device)
        out = generate(
            model,
            ids,
            max_new_tokens,
            temperature=temperature,
            generator=generator,
            stop_token=tokenizer.eos_token_id,
            block_size=block_size,
        )
        for i, row in zip(rows, out[:, length:].tolist(), strict=True):
            responses[i] = _decode_response(tokenizer, row)
    return responses


def _decode_response(tokenizer: Any, row: list[int]) -> str:
    eos = tokenizer.eos_token_id
    if eos in row:
        row = row[: row.index(eos)]
    return tokenizer.decode(row)
