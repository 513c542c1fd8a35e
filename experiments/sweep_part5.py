"""Part 5's full sweep: β × learning rate for six methods, on-policy pairs, noisy preferences.

Run ``python experiments/sweep_part5.py`` (CPU, one thread; about 15 minutes on one core of
the lab's 2-core reference machine: the script prints its wall time). It rewrites
``lib/dpolab/training/part5_results.json``, which notebook 05 loads, and which
``tests/test_part5.py`` checks against a re-run of one cell (bitwise, on the CPU).

The experiments are :mod:`dpolab.training.part5`'s (its docstring explains the grid, the β
scale of IPO and what a seed is). The JSON holds:

* ``setup``: steps, batch size, evaluation interval, patience, the sizes of the validation and
  test sets, the SFT model's test metric;
* ``sweep``: one row per (method, β, lr, seed): ``best_step``, ``val_metric`` (the best),
  and the test ``task_metric``, ``kl`` (nats per response) and ``chosen_logp`` (mean log-prob
  of the correct answers) of the early-stopped checkpoint, plus its ``curve``;
* ``sweep_summary``: mean and standard deviation over seeds per (method, β, lr);
* ``noise``: one row per (method, ε, seed), and ``noise_summary``;
* ``on_policy``: one entry per seed, the test metrics after each round and of the offline run;
* ``displacement``: per-token log-prob changes of one test pair after 150 steps of DPO and of
  DPO+NLL (notebook 04's recipe);
* ``wall_time_s``: the sweep's wall time on the machine that made the file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dpolab import PreferenceDatasetGenerator, token_logp_change
from dpolab.training import part5
from dpolab.training.part5_results import RESULTS_FILE


def _round(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS_FILE)
    parser.add_argument(
        "--smoke", action="store_true", help="one β, lr and seed per method: checks the script runs"
    )
    args = parser.parse_args()
    if args.smoke:
        part5.BETAS = {m: b[:1] for m, b in part5.BETAS.items()}
        part5.LRS, part5.SEEDS, part5.NOISE_EPS = part5.LRS[:1], part5.SEEDS[:2], part5.NOISE_EPS[:2]
    torch.set_num_threads(1)  # the numbers the test re-runs are those of one thread
    start = time.perf_counter()
    setup = part5.make_setup()
    sweep = []
    for method, betas in part5.BETAS.items():
        for beta in betas:
            for lr in part5.LRS:
                for seed in part5.SEEDS:
                    row = part5.run_cell(setup, method, beta, lr, seed)
                    sweep.append(row)
                    print(f"{method:<8} beta {beta:<4g} lr {lr:g} seed {seed}: test {row['task_metric']:.1%} "
                          f"at step {row['best_step']}, KL {row['kl']:.2f}  [{time.perf_counter() - start:.0f} s]",
                          flush=True)  # fmt: skip
    noise = []
    for name in part5.NOISE_METHODS:
        for eps in part5.NOISE_EPS:
            for seed in part5.SEEDS:
                noise.append(part5.run_noise(setup, name, eps, seed))
        print(f"noise {name} done [{time.perf_counter() - start:.0f} s]", flush=True)
    on_policy = [
        part5.run_on_policy(setup, PreferenceDatasetGenerator(min_score_diff=0.5), seed)
        for seed in part5.SEEDS
    ]
    print(f"on-policy done [{time.perf_counter() - start:.0f} s]", flush=True)
    # One test pair, per token: the pair whose chosen response DPO pushed down the most (whole run, 150 steps).
    models = {m: part5.train_steps(setup, m, 0.1, setup.recipe.lr, 0) for m in ("DPO", "DPO+NLL")}
    test_pairs = [p for p in setup.task.preference_pairs("eval") if p.prompt in setup.test]
    pair = part5.most_displaced(setup, models["DPO"], test_pairs)
    displacement = {}
    for method, model in models.items():
        tokens, change = token_logp_change(model, setup.sft_model, setup.tokenizer, pair.prompt, pair.chosen)
        rejected_tokens, change_rejected = token_logp_change(
            model, setup.sft_model, setup.tokenizer, pair.prompt, pair.rejected
        )
        displacement[method] = {"chosen_change": change, "rejected_change": change_rejected}
    displacement.update(chosen_tokens=tokens, rejected_tokens=rejected_tokens)
    wall = time.perf_counter() - start
    results = {
        "setup": {
            "steps": part5.STEPS,
            "batch_size": setup.recipe.batch_size,
            "eval_every": part5.EVAL_EVERY,
            "patience": part5.PATIENCE,
            "n_validation": len(setup.validation),
            "n_test": len(setup.test),
            "lrs": list(part5.LRS),
            "seeds": list(part5.SEEDS),
            "betas": {m: list(b) for m, b in part5.BETAS.items()},
            "on_policy": part5.ON_POLICY,
            "sft": part5.measure(setup, setup.sft_model, setup.test),
        },
        "sweep": sweep,
        "sweep_summary": part5.summarise(sweep, ("method", "beta", "lr")),
        "noise": noise,
        "noise_summary": part5.summarise(noise, ("method", "eps")),
        "on_policy": on_policy,
        "displacement": {
            "prompt": pair.prompt,
            "chosen": pair.chosen,
            "rejected": pair.rejected,
            **displacement,
        },
        "wall_time_s": wall,
    }
    args.out.write_text(json.dumps(_round(results), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(sweep)} sweep cells, {len(noise)} noise cells, {len(on_policy)} on-policy seeds "
          f"in {wall / 60:.1f} minutes")  # fmt: skip


if __name__ == "__main__":
    main()
