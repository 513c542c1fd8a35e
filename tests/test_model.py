"""Tests for dpolab.training.model (TinyGPT), dpolab.training.generation and dpolab.data.tokenizer."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from dpolab import CharTokenizer, GPTConfig, TinyGPT, complete, generate
from dpolab.data.tokenizer import DEFAULT_ALPHABET


def tiny(vocab_size: int = 13, seed: int = 0, **kw) -> TinyGPT:
    torch.manual_seed(seed)
    config = {"block_size": 12, "n_layer": 2, "n_head": 2, "n_embd": 16} | kw
    return TinyGPT(GPTConfig(vocab_size=vocab_size, **config)).eval()


# --- GPTConfig and forward -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 10, "n_head": 3, "n_embd": 16}, "n_embd"),
        ({"vocab_size": 10, "block_size": 2.5}, "block_size"),
        ({"vocab_size": 10, "dropout": 1.0}, "dropout"),
    ],
)
def test_config_rejects_bad_sizes_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GPTConfig(**kwargs)


def test_forward_shape_and_input_checks():
    model = tiny()
    ids = torch.randint(0, 13, (3, 7))
    assert model(ids).shape == (3, 7, 13)
    with pytest.raises(ValueError, match="input_ids"):
        model(ids[0])
    with pytest.raises(ValueError, match="input_ids"):
        model(ids.float())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny()
    ids = torch.randint(0, 13, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 5) % 13
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3  # the changed positions do see their own tokens


def test_right_padding_leaves_real_positions_unchanged():
    # Why TinyGPT may ignore attention_mask: padding only ever sits to the right.
    model = tiny()
    ids = torch.randint(2, 13, (1, 5))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 4])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, :5], model(ids), rtol=0, atol=1e-6)


def test_embeddings_are_tied_and_counted_once():
    model = tiny()
    assert model.lm_head.weight is model.wte.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    assert model.num_parameters() == sum(unique.values())
    # A gradient through the head reaches the embedding matrix (they are one tensor).
    model(torch.tensor([[1, 2]]))[0, -1, 7].backward()
    assert model.wte.weight.grad[:, :].abs().sum() > 0


def test_residual_projections_get_the_scaled_init():
    model = tiny(n_layer=4, n_embd=64, n_head=4, seed=1)
    std = model.blocks[0].attn.proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 4) ** 0.5) < 0.002
    assert abs(model.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.002


# --- generation ----------------------------------------------------------------------------


def _greedy_by_hand(model, ids, n):
    for _ in range(n):
        next_id = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_id], dim=1)
    return ids


def test_greedy_generation_is_deterministic_and_matches_argmax():
    model = tiny()
    prompt = torch.randint(0, 13, (4, 3))
    out = model.generate(prompt, max_new_tokens=5)
    assert out.shape == (4, 8)
    torch.testing.assert_close(out, model.generate(prompt, max_new_tokens=5), rtol=0, atol=0)
    torch.testing.assert_close(out, _greedy_by_hand(model, prompt, 5), rtol=0, atol=0)
    torch.testing.assert_close(out[:, :3], prompt, rtol=0, atol=0)


class FixedLM(nn.Module):
    """Next-token logits that do not depend on the context: ``logits`` at every position."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        return self.logits.expand(*input_ids.shape, -1).clone()


def test_sampling_follows_the_distribution_and_the_generator():
    model = FixedLM(torch.log(torch.tensor([0.1, 0.2, 0.7])))
    prompt = torch.zeros(2000, 1, dtype=torch.long)
    out = generate(model, prompt, 1, temperature=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out[:, 1], minlength=3).float() / 2000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.7]), rtol=0, atol=0.04)
    again = generate(model, prompt, 1, temperature=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    # temperature -> 0 is argmax; a high temperature flattens the distribution
    assert (generate(model, prompt[:5], 3)[:, 1:] == 2).all()
    hot = generate(model, prompt, 1, temperature=100.0, generator=torch.Generator().manual_seed(1))
    assert (torch.bincount(hot[:, 1], minlength=3).float() / 2000 - 1 / 3).abs().max() < 0.05


def test_stop_token_fills_the_rest_and_ends_early():
    # Always predicts token 1 (the stop token) after token 2, else token 2.
    class StopLM(FixedLM):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, 3)
            logits[..., 2] = 5.0
            logits[..., 1] = torch.where(input_ids == 2, 10.0, 0.0)
            return logits

    model = StopLM(torch.zeros(3))
    out = generate(model, torch.tensor([[0], [2]]), max_new_tokens=6, stop_token=1)
    assert out.tolist() == [[0, 2, 1], [2, 1, 1]]  # ended after 2 new tokens, not 6


def test_generate_rejects_bad_arguments():
    model = tiny()
    ids = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(ids, max_new_tokens=-1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(ids, 2, temperature=-0.5)
    with pytest.raises(ValueError, match="input_ids"):
        generate(model, ids[0], 2)


def test_generate_restores_the_training_mode():
    model = tiny().train()
    model.generate(torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training


# --- tokenizer -----------------------------------------------------------------------------


def test_tokenizer_round_trip_and_special_ids():
    tok = CharTokenizer()
    assert tok.vocab_size == len(DEFAULT_ALPHABET) + 2
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    rng = random.Random(0)
    for _ in range(50):
        text = "".join(rng.choice(DEFAULT_ALPHABET) for _ in range(rng.randint(0, 20)))
        ids = tok.encode(text)
        assert len(ids) == len(text) and min(ids, default=2) >= 2
        assert tok.decode(ids) == text
    assert tok.encode("12", add_eos=True) == [tok.encode("1")[0], tok.encode("2")[0], 1]
    # decode stops at EOS and skips padding, unless asked to show them
    ids = tok.encode("58+67=") + [0] + tok.encode("125") + [1] + tok.encode("9")
    assert tok.decode(ids) == "58+67=125"
    assert tok.decode(ids, skip_special=False) == "58+67=<pad>125<eos>9"
    assert tok.decode(torch.tensor(tok.encode("ab"))) == "ab"
    assert tok.vocab()["<eos>"] == 1 and len(tok.vocab()) == tok.vocab_size


def test_tokenizer_errors_name_the_problem():
    tok = CharTokenizer("ab")
    with pytest.raises(ValueError, match="'c'"):
        tok.encode("abc")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([7])
    with pytest.raises(ValueError, match="repeat"):
        CharTokenizer("aa")
    with pytest.raises(ValueError, match="text"):
        tok.encode(3)


def test_complete_groups_prompts_by_length_and_keeps_their_order():
    # A model that always answers "b" then EOS: the responses come back in prompt order.
    tok = CharTokenizer("ab")
    b = tok.encode("b")[0]

    class AnswerB(FixedLM):
        def forward(self, input_ids, attention_mask=None):
            logits = torch.zeros(*input_ids.shape, tok.vocab_size)
            logits[..., b] = torch.where(input_ids == b, 0.0, 10.0)
            logits[..., tok.eos_token_id] = torch.where(input_ids == b, 10.0, 0.0)
            return logits

    responses = complete(AnswerB(torch.zeros(1)), tok, ["a", "aaa", "aa", "a"], max_new_tokens=4)
    assert responses == ["b", "b", "b", "b"]
