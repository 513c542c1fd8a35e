r"""On-policy preference pairs: the answer of notebook 05's Exercise 5b.

Offline DPO trains on pairs someone else wrote (a teacher, another model). On-policy (or
*iterative*) DPO builds them from the model being trained: sample ``k`` responses to each
prompt from the current policy, score them, and pair the best with the worst. The rejected
responses are then the mistakes this policy actually makes, not a teacher's, and each round of
generate → pair → train sees the policy as it has become.
"""

from __future__ import annotations

import torch

from .generation import complete


def on_policy_pairs(
    policy, prompts, tokenizer, generator, scorer, k, temperature=1.0, seed=0, max_new_tokens=5
):
    """Preference pairs from ``k`` responses per prompt, sampled from ``policy`` at ``temperature``.

    Each response is scored with ``scorer(prompt, response)`` and the scored responses go,
    as records ``{"prompt", "response", "score"}``, to ``generator.from_scored_responses``
    (Part 3's pairing: best against worst; prompts whose samples all score the same give
    no pair). Returns the pairs the generator makes.
    """
    device = next(policy.parameters()).device
    rng = torch.Generator(device=device).manual_seed(seed)  # the same seed, the same samples
    repeated = [prompt for prompt in prompts for _ in range(k)]  # k samples of each, one batch
    responses = complete(
        policy, tokenizer, repeated, max_new_tokens, device=device, temperature=temperature, generator=rng
    )
    records = [
        {"prompt": prompt, "response": response, "score": scorer(prompt, response)}
        for prompt, response in zip(repeated, responses, strict=True)
    ]
    return generator.from_scored_responses(records)
