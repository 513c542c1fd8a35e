r"""Which tokens move: the change of each response token's log-probability after training.

Likelihood displacement (notebook 04) shows as the chosen response's log-probability
falling. Per token, :func:`token_logp_change` shows *where*: the tokens the chosen and the
rejected responses share get no gradient from DPO's loss (they cancel in the margin), yet
their log-probabilities move with the shared weights. :func:`response_logps` gives the summed
log-probability of whole responses (the chosen log-prob of a tuned model on held-out prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .generation import logits_of


@torch.no_grad()
def response_token_logps(
    model: Any, tokenizer: Any, prompt: str, response: str
) -> tuple[list[str], list[float]]:
    """``(tokens, logps)``: each response token (EOS included, shown as ``<eos>``) and its log-prob given what precedes it."""
    prompt_ids = tokenizer.encode(prompt)
    response_ids = tokenizer.encode(response, add_eos=True)
    ids = torch.tensor([prompt_ids + response_ids], device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        logits = logits_of(model(ids)).float()[0]
    finally:
        model.train(was_training)
    # logits at position t predict token t + 1: the response's tokens are predicted from len(prompt) - 1 on
    log_probs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    picked = log_probs.gather(-1, ids[0, len(prompt_ids) :, None]).squeeze(-1)
    tokens = [tokenizer.decode([i]) if i != tokenizer.eos_token_id else "<eos>" for i in response_ids]
    return tokens, picked.tolist()


def token_logp_change(
    policy: Any, reference: Any, tokenizer: Any, prompt: str, response: str
) -> tuple[list[str], list[float]]:
    """``(tokens, change)``: log π_θ − log π_ref of each response token (nats)."""
    tokens, after = response_token_logps(policy, tokenizer, prompt, response)
    _, before = response_token_logps(reference, tokenizer, prompt, response)
    return tokens, [a - b for a, b in zip(after, before, strict=True)]


def response_logps(
    model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str]
) -> list[float]:
    """The summed log-probability of each response (EOS included) given its prompt."""
    return [
        sum(response_token_logps(model, tokenizer, p, r)[1]) for p, r in zip(prompts, responses, strict=True)
    ]
