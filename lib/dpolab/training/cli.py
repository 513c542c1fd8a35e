"""``dpolab-train``: DPO (and the other losses of TRL 1.16) with TRL's ``DPOTrainer``, on one process or many.

    dpolab-train PAIRS.jsonl --output-dir DIR [--max-steps N] [--model NAME_OR_PATH] [--loss sigmoid] ...
    python -m dpolab.training.cli PAIRS.jsonl --output-dir DIR ...          # the same command

    # the same command, data-parallel (DDP): 2 CPU processes over gloo, or every GPU over NCCL
    accelerate launch --config_file deploy/accelerate/cpu_ddp.yaml -m dpolab.training.cli PAIRS.jsonl ...
    accelerate launch --config_file deploy/accelerate/multi_gpu.yaml -m dpolab.training.cli PAIRS.jsonl ...

``PAIRS.jsonl`` holds one ``{"prompt", "chosen", "rejected"}`` object per line (notebook 03's
format: :func:`dpolab.save_jsonl`). Without ``--model`` the policy is the lab's tiny Llama and
character tokenizer, built in code (nothing downloaded); ``--model`` takes any Hugging Face
causal LM, by name or path. ``DIR`` receives ``checkpoint-<step>/`` folders, ``metrics.jsonl``
(what the trainer logs, one line per logging step) and, at the end, the trained model and its
tokenizer. ``--resume`` continues from the last checkpoint in ``DIR``.

With N processes each one trains on its own ``--per-device-batch-size`` pairs of every step, so
one step sees per-device batch × N × ``--gradient-accumulation-steps`` pairs (the effective
batch): for the same run on fewer processes, raise the per-device batch or the accumulation.

This module reads and checks the arguments, without importing TRL (so ``--help`` and mistakes
answer at once); :mod:`dpolab.training.trl_dpo` does the training.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ..data.jsonl import load_jsonl

#: ``DPOConfig.loss_type`` values of TRL 1.16 (several may be combined, with ``--loss-weights``).
LOSS_TYPES = (
    "sigmoid",  # DPO (Rafailov et al. 2023)
    "hinge",  # SLiC
    "ipo",  # IPO (Azar et al. 2023), length-normalised as TRL does
    "exo_pair",  # EXO (needs --label-smoothing > 0)
    "nca_pair",  # NCA
    "robust",  # Robust DPO (--label-smoothing: the probability that a label is flipped)
    "bco_pair",  # BCO
    "sppo_hard",  # SPPO
    "aot",  # AOT, paired
    "aot_unpaired",  # AOT, unpaired
    "apo_zero",  # APO-zero
    "apo_down",  # APO-down
    "discopop",  # DiscoPOP
    "sft",  # the NLL of the chosen response alone (see --nll-weight)
    "sigmoid_norm",  # DPO on length-normalised log-ratios
)
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments; the names follow TRL's ``DPOConfig`` where it has one."""
    p = argparse.ArgumentParser(
        prog="dpolab-train",
        usage="%(prog)s PAIRS.jsonl --output-dir DIR [options]",
        description="Train a causal LM with DPO (TRL's DPOTrainer) on a prompt/chosen/rejected JSONL file. "
        "Runs alone or under `accelerate launch` (DDP, DeepSpeed).",
    )
    p.add_argument("pairs", type=Path, metavar="PAIRS.jsonl", help="one {prompt, chosen, rejected} per line")
    p.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="checkpoints, metrics.jsonl, final model",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME_OR_PATH",
        help="a Hugging Face causal LM (hub name or local folder); default: the lab's tiny Llama, built in code",
    )
    loss = p.add_argument_group("loss")
    loss.add_argument(
        "--loss", nargs="+", default=["sigmoid"], choices=LOSS_TYPES, metavar="TYPE",
        help=f"TRL's loss_type, one or more of: {', '.join(LOSS_TYPES)} (default: sigmoid, i.e. DPO)",
    )  # fmt: skip
    loss.add_argument("--loss-weights", nargs="+", type=float, default=None, metavar="W",
                      help="one weight per --loss (default: 1 each)")  # fmt: skip
    loss.add_argument(
        "--nll-weight", type=float, default=0.0, metavar="ALPHA",
        help="add the NLL of the chosen responses with this weight (RPO; TRL's 'sft' loss); default 0",
    )  # fmt: skip
    loss.add_argument("--beta", type=float, default=0.1, help="β: the strength of the KL to the reference")
    loss.add_argument(
        "--label-smoothing", type=float, default=0.0, help="for robust (in [0, 0.5)) and exo_pair"
    )
    opt = p.add_argument_group("training")
    opt.add_argument(
        "--max-steps", type=int, default=-1, help="optimiser steps (default: --epochs over the data)"
    )
    opt.add_argument(
        "--epochs", type=float, default=1.0, help="passes over the data when --max-steps is not set"
    )
    opt.add_argument("--per-device-batch-size", type=int, default=8, help="pairs per process per micro-batch")
    opt.add_argument("--gradient-accumulation-steps", type=int, default=1)
    opt.add_argument("--learning-rate", type=float, default=1e-6, help="AdamW's (default 1e-6, TRL's)")
    opt.add_argument("--max-length", type=int, default=1024, help="tokens of prompt + response kept")
    opt.add_argument("--seed", type=int, default=0, help="the tiny model's initialisation and the data order")
    opt.add_argument(
        "--cpu", action="store_true", help="train on the CPU even where a GPU is (DDP: over gloo)"
    )
    opt.add_argument("--bf16", action="store_true", help="bf16 mixed precision (default: float32)")
    opt.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations (large models)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--logging-steps", type=int, default=10, help="a metrics.jsonl line every N steps")
    out.add_argument("--save-steps", type=int, default=500, help="a checkpoint every N steps")
    out.add_argument("--save-total-limit", type=int, default=None, help="keep only the last N checkpoints")
    out.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --output-dir"
    )
    out.add_argument(
        "--log-batches", action="store_true",
        help="each process writes the pairs it trains on at each step to batches-rank<R>.jsonl",
    )  # fmt: skip
    return p


def last_checkpoint(output_dir: Path) -> Path | None:
    """The ``checkpoint-<step>`` folder of ``output_dir`` with the highest step, or None."""
    steps = [
        (int(m.group(1)), d)
        for d in (output_dir.iterdir() if output_dir.is_dir() else [])
        if d.is_dir() and (m := CHECKPOINT.fullmatch(d.name))
    ]
    return max(steps)[1] if steps else None


def check_args(args: argparse.Namespace) -> None:
    """Raises ``ValueError`` naming the argument for values TRL would reject late or not at all."""
    positive = [
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "logging_steps",
        "save_steps",
    ]
    for name in positive:
        if getattr(args, name) <= 0:
            raise ValueError(
                f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}"
            )
    if args.max_steps == 0 or args.max_steps < -1:
        raise ValueError(f"--max-steps must be a positive integer, got {args.max_steps}")
    if args.save_total_limit is not None and args.save_total_limit <= 0:
        raise ValueError(f"--save-total-limit must be a positive integer, got {args.save_total_limit}")
    for name in ("learning_rate", "beta", "epochs"):
        if not getattr(args, name) > 0:  # also rejects nan
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if not 0 <= args.nll_weight < float("inf"):
        raise ValueError(f"--nll-weight must be >= 0, got {args.nll_weight}")
    if args.nll_weight > 0 and "sft" in args.loss:
        raise ValueError("--nll-weight adds the 'sft' loss: do not also pass it to --loss")
    if args.loss_weights is not None and len(args.loss_weights) != len(args.loss):
        raise ValueError(
            f"--loss-weights needs one weight per --loss: {len(args.loss)} losses, {len(args.loss_weights)} weights"
        )
    if not 0 <= args.label_smoothing < 0.5:
        raise ValueError(f"--label-smoothing must be in [0, 0.5), got {args.label_smoothing}")
    if "exo_pair" in args.loss and args.label_smoothing == 0:
        raise ValueError("--loss exo_pair needs --label-smoothing > 0 (its paper uses 1e-3)")
    if not args.pairs.is_file():
        raise ValueError(f"PAIRS.jsonl: no such file: {args.pairs}")
    if args.resume and last_checkpoint(args.output_dir) is None:
        raise ValueError(f"--resume: no checkpoint-<step> folder in --output-dir {args.output_dir}")
    if not args.resume and last_checkpoint(args.output_dir) is not None:
        raise ValueError(
            f"--output-dir {args.output_dir} already holds checkpoints: pass --resume to continue from the "
            "last one, or choose another --output-dir"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Parses and checks the arguments and the pairs, then trains (:func:`dpolab.training.trl_dpo.train`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        pairs = load_jsonl(args.pairs)  # a bad record: ValueError naming the file and line
    except ValueError as err:
        parser.error(str(err))  # exits 2 with "dpolab-train: error: <message>"
    if not pairs:
        parser.error(f"PAIRS.jsonl: no pairs in {args.pairs}")
    from .trl_dpo import train  # TRL, transformers and datasets: only now (pip install "dpolab[trl]")

    train(args, pairs, resume_from=last_checkpoint(args.output_dir) if args.resume else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
