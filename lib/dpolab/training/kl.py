r"""The KL of a tuned policy to its reference, estimated on sampled responses.

:func:`kl_to_reference` samples a response :math:`y\sim\pi_\theta(\cdot\mid x)`
for each prompt, and along it sum the *exact* per-token KL between the two next-token
distributions,

.. math::

    \widehat{\mathrm{KL}} = \frac{1}{N}\sum_{i}\sum_{t}
    \mathrm{KL}\big(\pi_\theta(\cdot\mid x_i, y_{i,<t})\,\big\|\,\pi_\mathrm{ref}(\cdot\mid x_i, y_{i,<t})\big)

an unbiased estimate of the sequence-level :math:`\mathrm{KL}(\pi_\theta\,\|\,\pi_\mathrm{ref})`
(the chain rule of KL), never negative, and with far less variance than averaging
:math:`\log\pi_\theta(y) - \log\pi_\mathrm{ref}(y)` over the same samples. In nats per response.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from .generation import generate, logits_of


@torch.no_grad()
def kl_to_reference(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    device: torch.device | str | None = None,
    seed: int = 0,
    temperature: float = 1.0,
) -> float:
    """Estimated :math:`\\mathrm{KL}(\\pi_\\theta\\,\\|\\,\\pi_\\mathrm{ref})` per response, in nats (see the module doc).

    The same ``seed`` draws the same random numbers, so successive estimates during
    training differ by the policy, not by the luck of the draw.
    """
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    device = torch.device(device) if device is not None else next(policy.parameters()).device
    modes = policy.training, reference.training
    policy.eval()
    reference.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    eos = tokenizer.eos_token_id
    total, count = 0.0, 0
    by_length: dict[int, list[list[int]]] = defaultdict(list)
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        by_length[len(ids)].append(ids)
    try:
        for length, rows in sorted(by_length.items()):
            ids = torch.tensor(rows, dtype=torch.long, device=device)
            out = generate(policy, ids, max_new_tokens, temperature, generator, stop_token=eos)
            # Positions length-1 ... predict the response tokens; stop after the first EOS.
            new = out[:, length:]
            is_eos = new == eos
            after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
            scored = ~after_eos  # response tokens up to and including the first EOS
            logp = torch.log_softmax(logits_of(policy(out)).float(), dim=-1)[:, length - 1 : -1]
            logq = torch.log_softmax(logits_of(reference(out)).float(), dim=-1)[:, length - 1 : -1]
            per_token = (logp.exp() * (logp - logq)).sum(dim=-1)
            total += float((per_token * scored).sum())
            count += len(rows)
    finally:
        policy.train(modes[0])
        reference.train(modes[1])
    return total / count
