"""TRL's ``DPOTrainer`` on a prompt/chosen/rejected JSONL: the pieces that ``dpolab-train`` puts together.

- :func:`load_models`: the policy, the reference model and the tokenizer: the lab's tiny Llama and
  character tokenizer built in code (the default: nothing downloaded), or any Hugging Face causal LM;
- :func:`pairs_dataset`: the pairs as a ``datasets.Dataset`` with the three columns TRL reads;
- :class:`MetricsJsonl`: a ``TrainerCallback`` that writes what the trainer logs, one JSON line per
  logging step, on the main process only;
- :class:`LabDPOTrainer`: ``DPOTrainer`` that can also write which pairs each process trained on;
- :func:`train`: ``DPOConfig`` + ``LabDPOTrainer``, then ``train()`` (or resume) and save.

The same code runs alone or under ``accelerate launch``: the ``Trainer`` reads the process group
that ``accelerate`` set up (DDP over gloo on CPUs, NCCL on GPUs, or DeepSpeed), gives each process
its own share of every batch and averages the gradients. :mod:`dpolab.training.cli` reads the
command line. Needs ``pip install "dpolab[trl]"`` (TRL 1.16, transformers, accelerate, datasets).
"""

from __future__ import annotations

import copy
import json
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

from ..data.tokenizer import CharTokenizer
from .hf import hf_char_tokenizer, tiny_llama

METRICS_FILE = "metrics.jsonl"


def load_models(model: str | None, seed: int, max_length: int) -> tuple[Any, Any, Any]:
    """(policy, reference, tokenizer). ``model=None``: the lab's tiny Llama, initialised from ``seed``.

    The reference model π_ref is a frozen copy of the policy π_θ at the start (the SFT model in
    the DPO paper). It is passed to ``DPOTrainer`` explicitly: TRL would otherwise reload it by
    the model's name, which a model built in code does not have. A Hugging Face model is loaded
    twice with ``from_pretrained`` (in the dtype it was saved in, as TRL loads a model named by a
    string), after ``DPOConfig`` exists, so that DeepSpeed ZeRO-3 can shard the weights as they load.
    """
    if model is None:
        tokenizer = hf_char_tokenizer(CharTokenizer())
        policy = tiny_llama(len(tokenizer), max_position_embeddings=max_length, seed=seed)
        return policy, copy.deepcopy(policy), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:  # many causal LMs (Llama, GPT-2) have none: pad with EOS
        tokenizer.pad_token = tokenizer.eos_token
    policy = AutoModelForCausalLM.from_pretrained(model)
    reference = AutoModelForCausalLM.from_pretrained(model)
    return policy, reference, tokenizer


def pairs_dataset(pairs: list[dict[str, Any]]) -> Dataset:
    """The ``prompt``, ``chosen`` and ``rejected`` of each record (other keys dropped) as a ``Dataset``."""
    return Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])


def keep_steps_up_to(path: Path, step: int) -> None:
    """Keeps the lines of the JSONL file ``path`` whose ``"step"`` is at most ``step`` (creates it if absent).

    A resumed run redoes the steps after its checkpoint: their old lines go, the new ones follow.
    """
    lines = path.read_text().splitlines() if path.exists() else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= step))


class MetricsJsonl(TrainerCallback):
    """Writes ``output_dir/metrics.jsonl``: at each logging step ``{"step", "epoch", **logs}``.

    The logs are what ``DPOTrainer`` logs, averaged over the steps since the last line and over
    all processes: ``loss``, ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
    ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``, ``learning_rate``, ``grad_norm``,
    ...; the last line holds the run's summary (``train_loss``, ``train_runtime``, ...). Only the
    main process writes. A resumed run keeps the lines up to its checkpoint's step and appends.
    """

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / METRICS_FILE

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:  # a fresh run (step 0) starts an empty file
            keep_steps_up_to(self.path, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class LabDPOTrainer(DPOTrainer):
    """``DPOTrainer`` that, given ``batch_log`` (a path), appends the pairs this process trains on.

    One JSON line per micro-batch: ``{"step", "rank", "pairs"}``, ``pairs`` being the text of
    each prompt + chosen response in the batch, in order. With N processes each one writes its
    own file (``batches-rank<R>.jsonl``): it shows how the ``Trainer`` shards the data.
    """

    batch_log: Path | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.batch_log is not None:
            # The collator stacks [chosen rows; rejected rows], each one prompt + response, right-padded.
            n = inputs["input_ids"].shape[0] // 2
            rows = zip(inputs["input_ids"][:n], inputs["attention_mask"][:n], strict=True)
            pairs = [self.processing_class.decode(ids[mask.bool()].tolist()) for ids, mask in rows]
            record = {"step": self.state.global_step + 1, "rank": self.args.process_index, "pairs": pairs}
            with self.batch_log.open("a") as f:
                f.write(json.dumps(record) + "\n")
        return super().training_step(model, inputs, num_items_in_batch)


def dpo_config(args: Namespace) -> DPOConfig:
    """The ``DPOConfig`` of the command's arguments (see :func:`dpolab.training.cli.build_parser`).

    ``loss_type`` and ``loss_weights`` are TRL's: the NLL term on the chosen responses (RPO,
    Pang et al. 2024) is TRL's ``"sft"`` loss added with weight ``--nll-weight``.
    """
    loss_type, loss_weights = list(args.loss), args.loss_weights
    if args.nll_weight > 0:
        loss_weights = [*(loss_weights or [1.0] * len(loss_type)), args.nll_weight]
        loss_type.append("sft")
    return DPOConfig(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.per_device_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        beta=args.beta,
        loss_type=loss_type,
        loss_weights=loss_weights,
        label_smoothing=args.label_smoothing,
        max_length=args.max_length,
        seed=args.seed,
        logging_steps=args.logging_steps,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        bf16=args.bf16,  # TRL turns bf16 on by default; the lab trains in float32 unless asked
        gradient_checkpointing=args.gradient_checkpointing,
        ddp_find_unused_parameters=False,  # every parameter of a causal LM gets a gradient
        # On a machine without a GPU, every process trains on the CPU: under `accelerate launch` the
        # processes then form a DDP group over gloo (accelerate makes a CPU group only when asked to).
        use_cpu=args.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        report_to="none",
        dataloader_num_workers=0,
    )


def train(args: Namespace, pairs: list[dict[str, Any]], resume_from: Path | None = None) -> DPOTrainer:
    """Trains on ``pairs`` with the arguments of the command; returns the trainer.

    Writes in ``args.output_dir``: ``checkpoint-<step>/`` every ``--save-steps`` steps (model,
    optimiser, scheduler and RNG states: what ``--resume`` reads), ``metrics.jsonl``, and at the
    end the trained model and its tokenizer (``from_pretrained(output_dir)`` loads them).
    """
    config = dpo_config(args)  # first: DeepSpeed ZeRO-3 must know its config before the model loads
    policy, reference, tokenizer = load_models(args.model, args.seed, args.max_length)
    trainer = LabDPOTrainer(
        model=policy,
        ref_model=reference,
        args=config,
        train_dataset=pairs_dataset(pairs),
        processing_class=tokenizer,
        callbacks=[MetricsJsonl(args.output_dir)],
    )
    if args.log_batches:
        trainer.batch_log = Path(args.output_dir) / f"batches-rank{config.process_index}.jsonl"
        keep_steps_up_to(trainer.batch_log, int(resume_from.name.split("-")[-1]) if resume_from else 0)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(args.output_dir)  # the main process writes model + tokenizer
    return trainer
