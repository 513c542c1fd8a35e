"""Part 5's library pieces, and the shipped sweep cannot drift from the code that made it.

``lib/dpolab/training/part5_results.json`` is written by ``experiments/sweep_part5.py``; notebook
05 shows its numbers. :func:`test_one_sweep_cell_reproduces_the_shipped_numbers` re-runs one cell
of that sweep (the SFT model of the full recipe, then one early-stopped DPO run: about half a
minute on one core) and checks the shipped row bit for bit (CPU, one thread, seeded).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dpolab
from dpolab import flip_pairs, split_held_out
from dpolab.training import part5
from dpolab.training.part5_results import load_part5_results


def test_validation_and_test_are_disjoint_halves_of_the_held_out_prompts():
    task = dpolab.LAB_RECIPE.task(seed=0)
    validation, test = split_held_out(task.eval_prompts)
    assert not set(validation) & set(test)
    assert sorted(validation + test) == sorted(task.eval_prompts)
    assert abs(len(validation) - len(test)) <= 8
    mirror = {f"{p[:-1].split('+')[1]}+{p[:-1].split('+')[0]}=" for p in validation}
    assert not mirror & set(test), "a+b= and b+a= must land in the same half"


def test_flip_pairs_swaps_a_seeded_fraction():
    pairs = dpolab.LAB_RECIPE.task(seed=0).preference_pairs("train", n=100)
    noisy, flipped = flip_pairs(pairs, 0.2, seed=3)
    assert len(flipped) == 20 and flipped == sorted(flipped)
    assert flip_pairs(pairs, 0.2, seed=3)[1] == flipped != flip_pairs(pairs, 0.2, seed=4)[1]
    for i, (p, q) in enumerate(zip(pairs, noisy, strict=True)):
        want = (p.prompt, p.rejected, p.chosen) if i in flipped else (p.prompt, p.chosen, p.rejected)
        assert (q.prompt, q.chosen, q.rejected) == want
    assert flip_pairs(pairs, 0.0)[0] == pairs
    with pytest.raises(ValueError, match="eps"):
        flip_pairs(pairs, 1.5)


def test_preference_steps_is_train_preference_one_step_at_a_time():
    recipe = dataclasses.replace(dpolab.LAB_RECIPE.quick(), sft_steps=20)
    task, tok = recipe.task(0), dpolab.CharTokenizer()
    sft, _ = dpolab.run_sft(task, tok, recipe, progress=False)
    pairs = task.preference_pairs("train", n=64)
    import copy

    a, b = copy.deepcopy(sft), copy.deepcopy(sft)
    history = dpolab.train_preference(
        a, sft, pairs, tok, loss="kto", steps=4, batch_size=8, lr=1e-3, progress=False
    )
    run = dpolab.PreferenceSteps(b, sft, pairs, tok, loss="kto", steps=4, batch_size=8, lr=1e-3)
    losses = [run()["loss"] for _ in range(4)]
    assert losses == history["loss"]
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_reference_logps_scored_once_give_the_same_run():
    """``PreferenceSteps(reference_logps=...)``, as ``Setup.reference_logps`` scores them once for a
    sweep's cells: the same reference tensors and the same training, bit for bit, as scoring
    them in each run; a wrong shape is refused, naming the argument."""
    import copy

    recipe = dataclasses.replace(dpolab.LAB_RECIPE.quick(), sft_steps=20)
    task, tok = recipe.task(0), dpolab.CharTokenizer()
    sft, _ = dpolab.run_sft(task, tok, recipe, progress=False)
    pairs = task.preference_pairs("train", n=64)
    setup = part5.Setup(recipe, task, tok, sft, pairs, [], [], torch.device("cpu"))
    scored = setup.reference_logps(pairs, 8)
    assert setup.reference_logps(pairs, 8) is scored  # the same list of pairs: not scored again
    assert setup.reference_logps(list(pairs), 8) is not scored  # another list: scored for it
    runs = []
    for given in (None, scored):
        run = dpolab.PreferenceSteps(
            copy.deepcopy(sft),
            sft,
            pairs,
            tok,
            loss="kto",
            steps=3,
            batch_size=8,
            lr=1e-3,
            reference_logps=given,
        )
        runs.append((run.ref_chosen, run.ref_rejected, [run()["loss"] for _ in range(3)]))
    (c0, r0, losses0), (c1, r1, losses1) = runs
    assert torch.equal(c0, c1) and torch.equal(r0, r1) and losses0 == losses1
    with pytest.raises(ValueError, match="reference_logps must have shape \\(64,\\)"):
        dpolab.PreferenceSteps(copy.deepcopy(sft), sft, pairs, tok, reference_logps=(c0[:3], r0[:3]))


def test_token_logp_change_is_zero_against_itself():
    tok = dpolab.CharTokenizer()
    torch.manual_seed(0)
    model = dpolab.TinyGPT(
        dpolab.GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16)
    )
    tokens, change = dpolab.token_logp_change(model, model, tok, "12+34=", "46")
    assert tokens == ["4", "6", "<eos>"] and change == [0.0, 0.0, 0.0]
    (total,) = dpolab.response_logps(model, tok, ["12+34="], ["46"])
    assert total == pytest.approx(sum(dpolab.response_token_logps(model, tok, "12+34=", "46")[1]))


def test_shipped_results_hold_every_cell_of_the_grid():
    from dpolab.training import part5

    results = load_part5_results()
    cells = {(r["method"], r["beta"], r["lr"], r["seed"]) for r in results["sweep"]}
    grid = {
        (m, b, lr, s) for m, bs in part5.BETAS.items() for b in bs for lr in part5.LRS for s in part5.SEEDS
    }
    assert cells == grid
    assert len(results["on_policy"]) == len(part5.SEEDS)
    assert {(r["method"], r["eps"]) for r in results["noise_summary"]} == {
        (m, e) for m in part5.NOISE_METHODS for e in part5.NOISE_EPS
    }


def test_one_sweep_cell_reproduces_the_shipped_numbers():
    from dpolab.training import part5

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep ran
    try:
        setup = part5.make_setup()
        row = part5.run_cell(setup, "DPO", 0.1, 1e-4, 0)
    finally:
        torch.set_num_threads(threads)
    (shipped,) = [
        r
        for r in load_part5_results()["sweep"]
        if (r["method"], r["beta"], r["lr"], r["seed"]) == ("DPO", 0.1, 1e-4, 0)
    ]
    for key in ("best_step", "val_metric", "task_metric", "kl", "chosen_logp"):
        assert round(row[key], 6) == shipped[key], f"{key}: re-run {row[key]!r}, shipped {shipped[key]!r}"
    assert [round(x, 6) for x in row["curve"]["kl"]] == shipped["curve"]["kl"]
    assert row["curve"]["step"] == shipped["curve"]["step"]
