"""Known-good log-probs for notebook 04's tests, and the numbers its visible tests hard-code.

The package students receive holds no general sequence log-prob (that is Exercise 1's and
Exercise 4a's answer), so the oracles the in-process suites need live here, in tests/:

* :func:`separate_logps`: the log-probs of two separate forwards (chosen, then rejected),
  written out (no call into dpolab's training code), with the typical mistakes as options;
* :func:`visible_concat_numbers` and :func:`visible_step_numbers`: the expected numbers of
  the visible tests of ``test_concatenated_logps`` and ``test_dpo_train_step``, computed with
  dpolab's reference on exactly the set-up of those cells. ``test_grading_nb04.py`` checks
  that the numbers written in the notebook still equal these (they cannot drift).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

import dpolab
from dpolab import GPTConfig, TinyGPT
from dpolab.grading import ContextFreeLM, random_preference_batch

#: the model of notebook 04's grade cells
TINY = GPTConfig(vocab_size=11, block_size=24, n_layer=1, n_head=2, n_embd=16)


def plain_sequence_logps(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_t m_{t+1}\log\mathrm{softmax}(z_t)[\ell_{t+1}]` per row, in at least float32."""
    logits = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    mask = loss_mask[:, 1:].bool()
    targets = labels[:, 1:].masked_fill(~mask, 0)
    token = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, token, torch.zeros_like(token)).sum(-1)


def _logits_of(output: Any) -> torch.Tensor:
    return getattr(output, "logits", output)


def separate_logps(
    model: torch.nn.Module, batch: Any, shift: bool = True, mask: str = "loss_mask", average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-probs from two separate forwards (chosen, then rejected).

    The defaults give the right answer. ``shift=False`` (scores token t with the logits at t),
    ``mask="attention_mask"`` (counts the prompt) and ``average=True`` (mean over tokens) give
    the answers of typical mistakes.
    """
    out = []
    for side in (batch.chosen, batch.rejected):
        logits = _logits_of(model(side.input_ids))
        ids, m = side.input_ids, getattr(side, mask)
        if not shift:  # logits one step later than the tokens: position t then scores token t
            logits = F.pad(logits, (0, 0, 0, 1))
            ids, m = (F.pad(t, (1, 0)) for t in (ids, m))
        logps = plain_sequence_logps(logits, ids, m)
        if average:
            logps = logps / m[:, 1:].sum(-1).clamp(min=1)
        out.append(logps)
    return out[0], out[1]


def _rounded(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[list[float], list[float]]:
    return tuple([round(float(x), 5) for x in t] for t in pair)  # type: ignore[return-value]


@torch.no_grad()
def visible_concat_numbers() -> dict[str, tuple[list[float], list[float]]]:
    """``expected_logps`` of the visible test of ``test_concatenated_logps`` (its set-up, on the CPU)."""
    torch.manual_seed(0)
    lm = TinyGPT(TINY)
    batch = random_preference_batch(batch=3, vocab_size=11, seed=0)
    right = dpolab.concatenated_logps(lm, batch)  # the reference: one concatenated forward
    return {
        "right": _rounded(right),
        "no shift": _rounded(separate_logps(lm, batch, shift=False)),
        "prompt counted": _rounded(separate_logps(lm, batch, mask="attention_mask")),
        "mean over tokens": _rounded(separate_logps(lm, batch, average=True)),
    }


def visible_step_numbers() -> list[float]:
    """``expected_w`` of the visible test of ``test_dpo_train_step``: the policy's ``w`` after
    dpolab's reference step (SGD, lr 1.0, beta 0.5), on that cell's set-up."""
    reference = ContextFreeLM(vocab_size=11, seed=1)
    policy = ContextFreeLM(vocab_size=11, seed=2)
    batch = random_preference_batch(batch=4, vocab_size=11, seed=1)
    with torch.no_grad():
        ref_chosen, ref_rejected = dpolab.concatenated_logps(reference, batch)
    expected = copy.deepcopy(policy)
    dpolab.dpo_train_step(
        expected, batch, ref_chosen, ref_rejected, torch.optim.SGD(expected.parameters(), lr=1.0), beta=0.5
    )
    return [round(float(x), 6) for x in expected.w.detach()]


def variants_table() -> dict[str, Any]:
    """Section 5 of notebook 04 on the full recipe (the CPU, one thread): the content of
    ``lib/dpolab/training/variants_results.json``, the table a graded course's package shows in
    place of the runs (their losses are the answers of Parts 1 and 2). Takes a minute or more."""
    torch.set_num_threads(1)
    recipe = dpolab.lab_recipe()
    task, tokenizer = recipe.task(seed=0), dpolab.CharTokenizer()
    pairs = task.preference_pairs("train", n=None)
    sft_model, _ = dpolab.run_sft(task, tokenizer, recipe, seed=0, device="cpu", progress=False)
    sft_model.eval()
    methods = {
        "DPO": dict(loss="dpo"),
        "DPO+NLL": dict(loss="dpo", nll_weight=recipe.nll_weight),
        "IPO": dict(loss="ipo"),
        "KTO": dict(loss="kto"),
        "ORPO": dict(loss="orpo"),
        "SimPO": dict(loss="simpo"),
    }
    runs = [
        dpolab.run_preference(
            sft_model,
            task,
            tokenizer,
            method=name,
            pairs=pairs,
            recipe=recipe,
            device="cpu",
            progress=False,
            **kw,
        )
        for name, kw in methods.items()
    ]
    return {
        "made_by": "notebook 04, section 5, a full run of the lab's recipe on the CPU with one thread: "
        "dpolab.run_preference for each method (tests/nb04_oracle.py, variants_table)",
        "recipe": {
            "steps": recipe.steps,
            "batch_size": recipe.batch_size,
            "lr": recipe.lr,
            "nll_weight": recipe.nll_weight,
        },
        "sft_task_metric": task.evaluate(sft_model, tokenizer, device="cpu"),
        "runs": [
            {**run.row(), "kl": round(run.kl, 4), "wall_time_s": round(run.wall_time_s, 1)} for run in runs
        ],
    }


if __name__ == "__main__":  # print the numbers to paste into the notebook (--variants: the table too)
    import json
    import sys

    print("expected_logps =", visible_concat_numbers())
    print("expected_w =", visible_step_numbers())
    if "--variants" in sys.argv:
        print(json.dumps(variants_table(), indent=1))
