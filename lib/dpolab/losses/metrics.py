r"""The numbers people log while training with DPO (the same ones TRL logs).

The implicit reward of a response is :math:`r = \beta\,(\log\pi_\theta(y\mid x) -
\log\pi_\mathrm{ref}(y\mid x))`. We report the batch means of the chosen and rejected
rewards, their margin, the *reward accuracy* (the fraction of pairs where the chosen
reward is strictly greater: a tie is not a success), and the policy log-probabilities.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def preference_metrics(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> dict[str, torch.Tensor]:
    """Batch-mean reward metrics, all detached scalars.

    Keys: ``accuracy``, ``chosen_reward``, ``rejected_reward``, ``reward_margin``,
    ``chosen_log_prob``, ``rejected_log_prob``.
    """
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)
    return {
        "accuracy": (chosen_rewards > rejected_rewards).float().mean(),
        "chosen_reward": chosen_rewards.mean(),
        "rejected_reward": rejected_rewards.mean(),
        "reward_margin": (chosen_rewards - rejected_rewards).mean(),
        "chosen_log_prob": policy_chosen_logps.mean(),
        "rejected_log_prob": policy_rejected_logps.mean(),
    }
