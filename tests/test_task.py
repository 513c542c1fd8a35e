"""Tests for dpolab.data.arithmetic (the synthetic task) and the recipe around it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dpolab import ArithmeticTask, CharTokenizer, PreferencePair, load_jsonl, save_jsonl
from dpolab.data.arithmetic import carries
from dpolab.training.recipe import LAB_RECIPE, lab_recipe, quick_mode


@pytest.fixture(scope="module")
def task() -> ArithmeticTask:
    return ArithmeticTask(seed=3)


def test_answers_by_hand():
    assert ArithmeticTask.answer("58+67=") == "125"
    assert ArithmeticTask.sloppy_answer("58+67=") == "115"  # 8+7=15: write 5, forget the 1
    assert ArithmeticTask.sloppy_answer("19+19=") == "28"
    assert ArithmeticTask.answer("12+34=") == ArithmeticTask.sloppy_answer("12+34=") == "46"  # no carry
    assert carries(15, 25) and not carries(14, 25)
    assert ArithmeticTask.score("58+67=", "125") == 1.0
    for wrong in ("115", " 125", "1250", "12", ""):
        assert ArithmeticTask.score("58+67=", wrong) == 0.0


def test_bad_prompts_and_settings_are_named():
    with pytest.raises(ValueError, match="prompt"):
        ArithmeticTask.answer("58+67")
    with pytest.raises(ValueError, match="sloppy_rate"):
        ArithmeticTask(sloppy_rate=1.5)
    with pytest.raises(ValueError, match="n_eval"):
        ArithmeticTask(n_eval=10**6)
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().preference_pairs("test")


def test_same_seed_same_task_other_seed_other_task(task):
    again = ArithmeticTask(seed=3)
    assert again.eval_prompts == task.eval_prompts
    assert again.train_prompts == task.train_prompts
    assert again.sft_examples() == task.sft_examples()
    other = ArithmeticTask(seed=4)
    assert other.eval_prompts != task.eval_prompts
    assert other.sft_examples() != task.sft_examples()


def test_held_out_prompts_never_appear_in_training_in_either_order(task):
    train = set(task.train_prompts)
    assert len(task.eval_prompts) == 256 == len(set(task.eval_prompts))
    for prompt in task.eval_prompts:
        a, b = prompt[:-1].split("+")
        assert prompt not in train and f"{b}+{a}=" not in train
        assert carries(int(a), int(b))  # evaluated where the two behaviours differ
    assert {p for p, _ in task.sft_examples()} <= train
    assert {p.prompt for p in task.preference_pairs("train")} <= train
    assert {p.prompt for p in task.preference_pairs("eval")} <= set(task.eval_prompts)
    # Every two-digit prompt is in one of the two lists, except at most one: the twin of
    # the last held-out pair, when n_eval cut between its two orders (still never trained on).
    assert 90 * 90 - 1 <= len(train) + len(task.eval_prompts) <= 90 * 90


def test_sft_data_makes_the_sloppy_answer_common(task):
    examples = task.sft_examples()
    carry = [(p, r) for p, r in examples if carries(*map(int, p[:-1].split("+")))]
    sloppy = sum(r == ArithmeticTask.sloppy_answer(p) for p, r in carry) / len(carry)
    # Binomial(n ≈ 3400, 0.8): the standard deviation is under 0.007
    assert abs(sloppy - 0.8) < 0.03
    no_carry = [(p, r) for p, r in examples if (p, r) not in carry]
    assert all(r == ArithmeticTask.answer(p) for p, r in no_carry)
    assert all(
        r == ArithmeticTask.answer(p) for p, r in ArithmeticTask(seed=3, sloppy_rate=0.0).sft_examples()
    )
    assert len(task.sft_examples(n=10)) == 10


def test_pairs_prefer_the_correct_sum_and_export_as_jsonl(task, tmp_path):
    pairs = task.preference_pairs("train", n=50)
    assert len(pairs) == 50 and all(isinstance(p, PreferencePair) for p in pairs)
    for pair in pairs:
        assert pair.chosen == ArithmeticTask.answer(pair.prompt)
        assert pair.rejected == ArithmeticTask.sloppy_answer(pair.prompt) != pair.chosen
    save_jsonl(pairs, tmp_path / "pairs.jsonl")  # notebook 03's format, what TRL reads
    records = load_jsonl(tmp_path / "pairs.jsonl")
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in records] == [
        (p.prompt, p.chosen, p.rejected) for p in pairs
    ]


class OracleLM(nn.Module):
    """A 'model' that answers each prompt with ``answer(prompt)`` (character by character, then EOS)."""

    def __init__(self, tokenizer, answer):
        super().__init__()
        self.tok, self.answer = tokenizer, answer
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, self.tok.vocab_size)
        for b, row in enumerate(input_ids.tolist()):
            text = self.tok.decode(row, skip_special=False).replace("<eos>", "")
            prompt, _, so_far = text.partition("=")
            target = self.answer(prompt + "=") + "\0"
            for t in range(len(row)):
                prefix = self.tok.decode(row[: t + 1], skip_special=False)
                done = len(prefix) - len(prompt) - 1
                if done >= 0:
                    ch = target[done] if done < len(target) else "\0"
                    logits[b, t, 1 if ch == "\0" else self.tok.encode(ch)[0]] = 10.0
        return logits


def test_evaluate_scores_exact_answers_greedily(task):
    tok = CharTokenizer()
    prompts = task.eval_prompts[:20]
    assert task.evaluate(OracleLM(tok, ArithmeticTask.answer), tok, prompts) == 1.0
    assert task.evaluate(OracleLM(tok, ArithmeticTask.sloppy_answer), tok, prompts) == 0.0
    half = set(prompts[:5])
    mixed = OracleLM(
        tok, lambda p: ArithmeticTask.answer(p) if p in half else ArithmeticTask.sloppy_answer(p)
    )
    accuracy, responses = task.evaluate(mixed, tok, prompts, return_responses=True)
    assert accuracy == 0.25
    assert responses[0] == ArithmeticTask.answer(prompts[0])


def test_quick_mode_follows_nbgrader(monkeypatch):
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("DPOLAB_QUICK", raising=False)
    assert not quick_mode() and lab_recipe() == LAB_RECIPE
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert quick_mode() and lab_recipe().sft_steps < LAB_RECIPE.sft_steps
    monkeypatch.delenv("NBGRADER_EXECUTION")
    monkeypatch.setenv("DPOLAB_QUICK", "1")
    assert lab_recipe() == LAB_RECIPE.quick()
