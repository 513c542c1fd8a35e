"""Training: a tiny GPT, generation, SFT, preference training (DPO and its variants), evaluation.

:mod:`.model` (``TinyGPT``, ``GPTConfig``), :mod:`.generation` (greedy/sampled decoding for
any causal LM), :mod:`.sft` (``train_sft``, ``cosine_lr``), :mod:`.preference`
(``concatenated_logps``, ``dpo_train_step``, ``precompute_reference_logps``,
``train_preference``), :mod:`.kl` (``kl_to_reference``), :mod:`.evaluation` (task metric,
reward accuracy, one results-table row per method), :mod:`.recipe` (the settings notebook 04
uses, ``DEFAULT_BETA``), and :mod:`.early_stopping`, :mod:`.on_policy`,
:mod:`.heldout`, :mod:`.noise`, :mod:`.displacement` and :mod:`.part5` (notebook 05: early
stopping, on-policy pairs, the validation/test split, flipped pairs, per-token log-prob
changes, and the experiments of Part 5, whose results :mod:`.part5_results` loads), and
:mod:`.hf` (a tiny Hugging Face Llama and tokenizer built in
code; needs ``dpolab[trl]``, imported lazily). :mod:`.preference`, :mod:`.evaluation`, :mod:`.early_stopping`,
:mod:`.on_policy`, :mod:`.part5` and :mod:`.hf` are reference modules: the graded-course package does not include them.
"""

from dpolab._exports import absent_getattr, export, public

# module -> public names; a reference module (dpolab._exports.REFERENCE_MODULES) may be absent
_NAMES = {
    ".displacement": ["response_logps", "response_token_logps", "token_logp_change"],
    ".early_stopping": ["train_with_early_stopping"],  # reference
    ".heldout": ["split_held_out"],
    ".noise": ["flip_pairs"],
    ".on_policy": ["on_policy_pairs"],  # reference
    ".part5_results": ["load_part5_results"],
    ".evaluation": ["PreferenceRun", "evaluate_policy", "reward_accuracy", "run_preference"],  # reference
    ".generation": ["complete", "generate", "logits_of"],
    ".kl": ["kl_to_reference"],
    ".model": ["GPTConfig", "TinyGPT"],
    ".preference": [  # reference
        "concatenated_logps",
        "dpo_train_step",
        "PreferenceSteps",
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
