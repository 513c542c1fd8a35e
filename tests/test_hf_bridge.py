"""The lab's training code on a Hugging Face model, and TRL 1.16's DPOTrainer end to end against it.

The model is a tiny randomly initialised ``LlamaForCausalLM`` and the tokenizer is the
lab's character tokenizer rebuilt with ``tokenizers`` (dpolab.training.hf): nothing is
downloaded. The TRL parity test trains on the same pairs written as JSONL in notebook
03's format and compares what TRL logs for one batch with what the lab computes.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from dpolab import (
    ArithmeticTask,
    CharTokenizer,
    concatenated_logps,
    dpo_loss,
    preference_metrics,
    reward_accuracy,
    save_jsonl,
    sequence_logps,
    train_preference,
)
from dpolab.training.hf import TRL_LOG_NAMES, hf_char_tokenizer, tiny_llama
from dpolab.training.preference import PreferenceData

pytest.importorskip("transformers")

TOK = CharTokenizer()


@pytest.fixture(scope="module")
def hf_tok():
    return hf_char_tokenizer(TOK)


def test_hf_tokenizer_has_the_lab_ids(hf_tok):
    for text in ("58+67=125", "0", "ab c?"):
        assert hf_tok(text)["input_ids"] == TOK.encode(text)
        assert hf_tok.decode(TOK.encode(text)) == text
    assert hf_tok("58+67=125<eos>")["input_ids"] == TOK.encode(
        "58+67=125", add_eos=True
    )  # how TRL ends responses
    assert (hf_tok.pad_token_id, hf_tok.eos_token_id, hf_tok.bos_token_id) == (0, 1, None)


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(ImportError, match=r"dpolab\[trl\]"):
        tiny_llama(10)


def test_concatenated_forward_on_a_hf_model_equals_two_forwards(hf_tok):
    model = tiny_llama(TOK.vocab_size, hidden_size=32, num_hidden_layers=2, seed=1).eval()
    pairs = ArithmeticTask(seed=0).preference_pairs(n=6)
    pairs[0].rejected = "1"  # make the widths differ
    batch = PreferenceData(pairs, hf_tok).batch(torch.arange(6))
    chosen, rejected = concatenated_logps(model, batch)
    for side, got in (("chosen", chosen), ("rejected", rejected)):
        rows = getattr(batch, side)
        logits = model(input_ids=rows.input_ids, attention_mask=rows.attention_mask).logits
        torch.testing.assert_close(
            got, sequence_logps(logits, rows.input_ids, rows.loss_mask), rtol=1e-5, atol=1e-5
        )


def test_the_preference_loop_trains_a_hf_model(hf_tok):
    reference = tiny_llama(TOK.vocab_size, hidden_size=32, num_hidden_layers=1, seed=2).eval()
    policy = copy.deepcopy(reference)
    pairs = ArithmeticTask(seed=0).preference_pairs(n=16)
    history = train_preference(
        policy, reference, pairs, hf_tok, steps=25, batch_size=16, lr=3e-3, progress=False
    )
    assert history["loss"][0] == pytest.approx(0.693147, abs=1e-5)
    assert history["loss"][-1] < history["loss"][0] - 0.03
    assert history["reward_margin"][-1] > 0
    assert reward_accuracy(policy, reference, pairs, hf_tok) >= 0.9


def test_trl_dpo_trainer_logs_the_lab_loss_and_rewards_on_one_batch(hf_tok, tmp_path):
    pytest.importorskip("trl")
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    # Policy and reference differ (two seeds), so the rewards are not all zero.
    policy = tiny_llama(TOK.vocab_size, hidden_size=64, num_hidden_layers=2, seed=0)
    reference = tiny_llama(TOK.vocab_size, hidden_size=64, num_hidden_layers=2, seed=1)
    pairs = ArithmeticTask(seed=0).preference_pairs(n=8)
    pairs[3].rejected = "7"  # one pair with responses of different lengths
    save_jsonl(pairs, tmp_path / "pairs.jsonl")  # notebook 03's format

    # The lab: one concatenated forward of each model, before any update.
    batch = PreferenceData(pairs, hf_tok).batch(torch.arange(len(pairs)))
    with torch.no_grad():
        policy.eval()
        pc, pr = concatenated_logps(policy, batch)
        rc, rr = concatenated_logps(reference.eval(), batch)
    lab = {"loss": dpo_loss(pc, pr, rc, rr, beta=0.1).mean(), **preference_metrics(pc, pr, rc, rr, beta=0.1)}

    # TRL: all 8 pairs in one batch (so its shuffling cannot change a mean), one step.
    dataset = load_dataset("json", data_files=str(tmp_path / "pairs.jsonl"), split="train")
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=len(pairs),
        max_steps=1,
        logging_steps=1,
        beta=0.1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        # TRL 1.16 defaults to bf16 autocast where the CPU supports it (and wraps the reference too):
        # compare in float32, as the lab computes.
        bf16=False,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=dataset, processing_class=hf_tok
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    for key, trl_key in TRL_LOG_NAMES.items():
        assert logged[trl_key] == pytest.approx(lab[key].item(), rel=1e-5, abs=1e-5), key
    assert 0 < logged["rewards/accuracies"] < 1  # a real mix, not a degenerate batch
