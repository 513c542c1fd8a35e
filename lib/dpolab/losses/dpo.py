r"""Direct Preference Optimization (Rafailov et al., 2023, arXiv:2305.18290).

With :math:`h = \log\frac{\pi_\theta(y_w\mid x)}{\pi_\mathrm{ref}(y_w\mid x)} -
\log\frac{\pi_\theta(y_l\mid x)}{\pi_\mathrm{ref}(y_l\mid x)}` (the margin of log-ratios),

.. math::

    \mathcal{L}_\mathrm{DPO} = -(1-\varepsilon)\,\log\sigma(\beta h) - \varepsilon\,\log\sigma(-\beta h)

:math:`\varepsilon` is the *conservative* label smoothing of cDPO (Mitchell, 2023): each
label is taken to be flipped with probability ε. ε = 0 is plain DPO. In the
reference-free mode :math:`\pi_\mathrm{ref}` is dropped (its log-probs are 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_per_example, check_token_inputs, upcast
from .logprobs import sequence_logps
from .metrics import preference_metrics


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None = None,
    ref_rejected_logps: torch.Tensor | None = None,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    reference_free: bool = False,
) -> torch.Tensor:
    """Per-example (c)DPO losses, shape (B,), in at least float32.

    Reference log-probs are treated as constants (detached); they are 0 when
    ``reference_free`` is set or when they are not given.
    """
    # The policy first (before zeros_like below, so a non-tensor gets a clear ValueError),
    # then the reference against it.
    check_per_example(
        ("policy_chosen_logps", policy_chosen_logps),
        ("policy_rejected_logps", policy_rejected_logps),
    )
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    if reference_free or ref_chosen_logps is None or ref_rejected_logps is None:
        ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
        ref_rejected_logps = torch.zeros_like(policy_rejected_logps)
    check_per_example(
        ("policy_chosen_logps", policy_chosen_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    )
    chosen_log_ratio = upcast(policy_chosen_logps) - upcast(ref_chosen_logps).detach()
    rejected_log_ratio = upcast(policy_rejected_logps) - upcast(ref_rejected_logps).detach()
    logits = beta * (chosen_log_ratio - rejected_log_ratio)
    # logsigmoid is stable for any |logits| (no log(0), no exp overflow).
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


class DPOLoss(nn.Module):
    """DPO loss on model logits: the class students write in Exercise 1.

    ``forward`` returns ``(loss, metrics)``: the batch-mean loss and the detached
    metrics of :func:`dpolab.losses.metrics.preference_metrics` plus ``loss``.
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0, reference_free: bool = False):
        super().__init__()
        self.beta = beta
        self.label_smoothing = label_smoothing
        self.reference_free = reference_free

    def compute_log_probs(
        self, logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor
    ) -> torch.Tensor:
        """Sum of response-token log-probs per sequence, shape (B,)."""
        return sequence_logps(logits, labels, loss_mask)

    def forward(
        self,
        policy_chosen_logits: torch.Tensor,
        policy_rejected_logits: torch.Tensor,
        chosen_labels: torch.Tensor,
        rejected_labels: torch.Tensor,
        chosen_mask: torch.Tensor,
        rejected_mask: torch.Tensor,
        reference_chosen_logits: torch.Tensor | None = None,
        reference_rejected_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        check_token_inputs(policy_chosen_logits, chosen_labels, chosen_mask, prefix="chosen_")
        check_token_inputs(policy_rejected_logits, rejected_labels, rejected_mask, prefix="rejected_")
        if policy_chosen_logits.shape[0] != policy_rejected_logits.shape[0]:
            raise ValueError(
                "policy_chosen_logits and policy_rejected_logits must have the same batch size, "
                f"got {policy_chosen_logits.shape[0]} and {policy_rejected_logits.shape[0]}"
            )
        policy_chosen_logps = self.compute_log_probs(policy_chosen_logits, chosen_labels, chosen_mask)
        policy_rejected_logps = self.compute_log_probs(policy_rejected_logits, rejected_labels, rejected_mask)

        use_reference = not self.reference_free and reference_chosen_logits is not None
        if use_reference:
            if reference_rejected_logits is None:
                raise ValueError("reference_rejected_logits must be given with reference_chosen_logits")
            for name, ref, pol in (
                ("reference_chosen_logits", reference_chosen_logits, policy_chosen_logits),
                ("reference_rejected_logits", reference_rejected_logits, policy_rejected_logits),
            ):
                if ref.shape != pol.shape:
                    raise ValueError(
                        f"{name} must have the policy's shape {tuple(pol.shape)}, got {tuple(ref.shape)}"
                    )
            with torch.no_grad():  # the reference model is frozen: no gradient reaches it
                ref_chosen_logps = self.compute_log_probs(reference_chosen_logits, chosen_labels, chosen_mask)
                ref_rejected_logps = self.compute_log_probs(
                    reference_rejected_logits, rejected_labels, rejected_mask
                )
        else:
            ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
            ref_rejected_logps = torch.zeros_like(policy_rejected_logps)

        losses = dpo_loss(
            policy_chosen_logps,
            policy_rejected_logps,
            ref_chosen_logps,
            ref_rejected_logps,
            beta=self.beta,
            label_smoothing=self.label_smoothing,
        )
        loss = losses.mean()
        metrics = {"loss": loss.detach()}
        metrics.update(
            preference_metrics(
                policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, self.beta
            )
        )
        return loss, metrics
