"""Training: a tiny GPT, generation, SFT, preference training (DPO and its variants), evaluation.

:mod:`.model` (``TinyGPT``, ``GPTConfig``), :mod:`.generation` (greedy/sampled decoding for
any causal LM), :mod:`.sft` (``train_sft``, ``cosine_lr``), :mod:`.preference`
(``concatenated_logps``, ``dpo_train_step``, ``precompute_reference_logps``,
``train_preference``), :mod:`.kl` (``kl_to_reference``), :mod:`.evaluation` (task metric,
reward accuracy, one results-table row per method), :mod:`.recipe` (the settings notebook 04
uses, ``DEFAULT_BETA``), and :mod:`.hf` (a tiny Hugging Face Llama and tokenizer built in
code; needs ``dpolab[trl]``, imported lazily). :mod:`.preference`, :mod:`.evaluation` and
:mod:`.hf` are reference modules: the graded-course package does not include them.
"""

from dpolab._exports import absent_getattr, export, public

# module -> public names; a reference module (dpolab._exports.REFERENCE_MODULES) may be absent
_NAMES = {
    ".evaluation": ["PreferenceRun", "evaluate_policy", "reward_accuracy", "run_preference"],  # reference
    ".generation": ["complete", "generate", "logits_of"],
    ".kl": ["kl_to_reference"],
    ".model": ["GPTConfig", "TinyGPT"],
    ".preference": [  # reference
        "concatenated_logps",
        "dpo_train_step",
        "precompute_reference_logps",
        "preference_loss",
        "train_preference",
    ],
    ".recipe": ["DEFAULT_BETA", "LAB_RECIPE", "Recipe", "lab_recipe", "quick_mode", "run_sft"],
    ".sft": ["cosine_lr", "train_sft"],
}
_absent = export(globals(), _NAMES)
__getattr__ = absent_getattr(__name__, _absent)
__all__ = public(_NAMES, _absent)
