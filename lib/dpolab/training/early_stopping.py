r"""Early stopping on held-out data: the answer of notebook 05's Exercise 5a.

Preference optimisation over-optimises: the task metric on held-out prompts rises for a few
steps, peaks, and falls while the training loss keeps falling and the reward margin keeps
growing. :func:`train_with_early_stopping` scores a *validation* set every ``eval_every``
steps, keeps a copy of the best weights, stops after ``patience`` evaluations without
improvement, and reports the *test* metric of the checkpoint it selected (the validation
metric, maximised over many evaluations, is biased upwards: it was used to choose).
"""

from __future__ import annotations

import copy


def train_with_early_stopping(model, train_step, validate, test, max_steps, eval_every, patience):
    """Train ``model`` with ``train_step`` and keep the checkpoint that scores best on validation.

    train_step(model) -> float: one optimiser step (returns the training loss).
    validate(model) -> float: the validation metric (higher is better).
    test(model) -> float: the test metric.
    Returns (best_model, best_step, test_metric, history), history = [(step, validation metric), ...].
    """
    best_metric = validate(model)  # step 0: the model we start from is a candidate too
    best_step, bad = 0, 0
    best_weights = copy.deepcopy(model.state_dict())  # a copy: the live tensors keep changing
    history = [(0, best_metric)]
    for step in range(1, max_steps + 1):
        train_step(model)
        if step % eval_every:
            continue
        metric = validate(model)
        history.append((step, metric))
        if metric > best_metric:
            best_metric, best_step, bad = metric, step, 0
            best_weights = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad == patience:
                break
    model.load_state_dict(best_weights)
    return model, best_step, test(model), history
