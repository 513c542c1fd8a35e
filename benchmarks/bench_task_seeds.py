"""The acceptance experiment of notebook 04, for several seeds: SFT, then DPO and DPO+NLL (and optionally every variant).

For each seed: generate the task, SFT a fresh TinyGPT, then tune a copy with each method
at the lab's recipe (``dpolab.LAB_RECIPE``; DPO at the lab's default β = 0.1). Prints
the task metric (exact-answer accuracy, greedy, on held-out carry prompts) of the SFT
model and of each method, the gain in percentage points, the implicit-reward accuracy on
held-out pairs, the KL to the SFT reference, and the wall time of each phase.

    python benchmarks/bench_task_seeds.py                # seeds 0 1 2, SFT vs DPO vs DPO+NLL
    python benchmarks/bench_task_seeds.py --all          # + IPO, KTO, ORPO, SimPO (the notebook's table)
    python benchmarks/bench_task_seeds.py --seeds 3 4

Acceptance: DPO (with or without NLL) beats SFT by >= 30 pp on every seed.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import dpolab

METHODS = {"DPO": {"loss": "dpo"}, "DPO+NLL": {"loss": "dpo", "nll_weight": dpolab.LAB_RECIPE.nll_weight}}
VARIANTS = {
    "IPO": {"loss": "ipo"},
    "KTO": {"loss": "kto"},
    "ORPO": {"loss": "orpo"},
    "SimPO": {"loss": "simpo"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--all", action="store_true", help="also IPO, KTO, ORPO and SimPO")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = dpolab.get_device()
    recipe = dpolab.LAB_RECIPE
    methods = {**METHODS, **(VARIANTS if args.all else {})}
    tokenizer = dpolab.CharTokenizer()
    print(f"device {device}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; {recipe}")
    print(
        f"\n{'seed':>4} {'method':<9}{'task':>7}{'Δ vs SFT':>10}{'reward acc':>12}{'KL':>8}{'time s':>8}"
        "   (task: exact answers on held-out carry prompts; KL: nats/response)"
    )
    gains: dict[str, list[float]] = {m: [] for m in methods}
    for seed in args.seeds:
        task = recipe.task(seed)
        start = time.perf_counter()
        sft, _ = dpolab.run_sft(task, tokenizer, recipe, seed=seed, device=device, progress=False)
        sft_time = time.perf_counter() - start
        sft_metric = task.evaluate(sft, tokenizer, device=device)
        print(f"{seed:>4} {'SFT':<9}{sft_metric:>7.3f}{'':>10}{'':>12}{'':>8}{sft_time:>8.1f}")
        for name, kwargs in methods.items():
            run = dpolab.run_preference(
                sft, task, tokenizer, method=name, seed=seed, device=device, progress=False, **kwargs
            )
            gain = 100 * (run.task_metric - sft_metric)
            gains[name].append(gain)
            print(
                f"{seed:>4} {name:<9}{run.task_metric:>7.3f}{gain:>+9.1f}pp"
                f"{run.reward_accuracy:>12.3f}{run.kl:>8.2f}{run.wall_time_s:>8.1f}"
            )
    print("\ngain over SFT (pp), per seed:")
    for name, values in gains.items():
        verdict = "meets" if min(values) >= 30 else "misses"
        print(f"  {name:<9}" + " ".join(f"{v:+7.1f}" for v in values) + f"   {verdict} the >= 30 pp target")


if __name__ == "__main__":
    main()
