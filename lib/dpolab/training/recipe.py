"""The settings notebook 04 trains with: one place, shared by the notebook, the tests and the benchmarks.

:data:`LAB_RECIPE` is the full run (about two minutes for everything on a 2-core CPU);
:meth:`Recipe.quick` is the short one used while nbgrader autogrades (``NBGRADER_EXECUTION``
is set) or when ``DPOLAB_QUICK=1``: the same code, fewer steps, results not meaningful.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..data.arithmetic import ArithmeticTask
from ..data.tokenizer import CharTokenizer
from .model import GPTConfig, TinyGPT
from .sft import train_sft

#: The losses :func:`~dpolab.training.preference.train_preference` knows, and the β each uses by
#: default (ORPO's is its λ; SimPO's scale differs because it reads per-token averages).
DEFAULT_BETA = {"dpo": 0.1, "ipo": 0.1, "kto": 0.1, "orpo": 0.1, "simpo": 2.0}


@dataclass(frozen=True)
class Recipe:
    """Model size, task, SFT and preference-training settings."""

    # model: about 0.4M parameters
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 16
    # task: 80 % of the SFT answers to carry prompts forget the carry
    sloppy_rate: float = 0.8
    n_eval: int = 256
    # SFT
    sft_steps: int = 1000
    sft_batch_size: int = 64
    sft_lr: float = 1e-3
    # preference training: the same budget for every loss
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-4
    nll_weight: float = 1.0  # the α of DPO+NLL (RPO)

    def quick(self) -> Recipe:
        """A short version for autograding: a few seconds, not a result."""
        return replace(self, sft_steps=20, steps=15, n_eval=64)

    def task(self, seed: int = 0) -> ArithmeticTask:
        """The task of this recipe, generated from ``seed``."""
        return ArithmeticTask(seed=seed, sloppy_rate=self.sloppy_rate, n_eval=self.n_eval)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(
            vocab_size=vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
        )

    def train_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~dpolab.training.preference.train_preference` this recipe sets."""
        return {"steps": self.steps, "batch_size": self.batch_size, "lr": self.lr}


LAB_RECIPE = Recipe()


def quick_mode() -> bool:
    """True while nbgrader runs the notebook (``NBGRADER_EXECUTION``) or when ``DPOLAB_QUICK=1``."""
    return bool(os.environ.get("NBGRADER_EXECUTION")) or os.environ.get("DPOLAB_QUICK", "") == "1"


def lab_recipe() -> Recipe:
    """:data:`LAB_RECIPE`, or its quick version in :func:`quick_mode`."""
    return LAB_RECIPE.quick() if quick_mode() else LAB_RECIPE


def run_sft(
    task: ArithmeticTask,
    tokenizer: CharTokenizer,
    recipe: Recipe | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[TinyGPT, dict[str, list[float]]]:
    """A fresh :class:`TinyGPT` (initialised from ``seed``) fine-tuned on ``task``'s SFT data: ``(model, history)``."""
    recipe = recipe or lab_recipe()
    torch.manual_seed(seed)
    model = TinyGPT(recipe.model_config(tokenizer.vocab_size))
    history = train_sft(
        model,
        task.sft_examples(),
        tokenizer,
        steps=recipe.sft_steps,
        batch_size=recipe.sft_batch_size,
        lr=recipe.sft_lr,
        seed=seed,
        device=device or "cpu",
        progress=progress,
    )
    model.eval()
    return model, history
