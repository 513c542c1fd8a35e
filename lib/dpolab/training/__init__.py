"""Training: a tiny GPT, generation, SFT, preference training (DPO and its variants), evaluation.

:mod:`.model` (``TinyGPT``, ``GPTConfig``), :mod:`.generation` (greedy/sampled decoding for
any causal LM), :mod:`.sft` (``train_sft``), :mod:`.preference` (``concatenated_logps``,
``dpo_train_step``, ``precompute_reference_logps``, ``train_preference``),
:mod:`.evaluation` (task metric, reward accuracy, KL to the reference, one results-table
row per method), :mod:`.recipe` (the settings notebook 04 uses), and :mod:`.hf` (a tiny
Hugging Face Llama and tokenizer built in code; needs ``dpolab[trl]``, imported lazily).
"""

from .evaluation import PreferenceRun, evaluate_policy, kl_to_reference, reward_accuracy, run_preference
from .generation import complete, generate, logits_of
from .model import GPTConfig, TinyGPT
from .preference import (
    DEFAULT_BETA,
    concatenated_logps,
    dpo_train_step,
    precompute_reference_logps,
    preference_loss,
    train_preference,
)
from .recipe import LAB_RECIPE, Recipe, lab_recipe, quick_mode, run_sft
from .sft import train_sft

__all__ = [
    "LAB_RECIPE",
    "Recipe",
    "lab_recipe",
    "quick_mode",
    "run_sft",
    "DEFAULT_BETA",
    "GPTConfig",
    "PreferenceRun",
    "TinyGPT",
    "complete",
    "concatenated_logps",
    "dpo_train_step",
    "evaluate_policy",
    "generate",
    "kl_to_reference",
    "logits_of",
    "precompute_reference_logps",
    "preference_loss",
    "reward_accuracy",
    "run_preference",
    "train_preference",
    "train_sft",
]
