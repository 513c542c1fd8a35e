"""The bridge to Hugging Face: a tiny randomly initialised Llama and the lab's tokenizer as a HF tokenizer.

Built in code, nothing downloaded, so TRL's ``DPOTrainer`` can train on the lab's pairs
offline. Needs ``transformers`` (and TRL for the trainer): ``pip install "dpolab[trl]"``.
The imports are inside the functions, so ``import dpolab`` works without them.

With TRL 1.16's ``DPOTrainer`` on a CPU, pass ``ref_model=`` explicitly (it cannot reload
a model built in code by name) and, to compare with the lab in float32, ``bf16=False``:
``DPOConfig`` turns bf16 autocast on wherever the CPU supports it, for the policy and the
reference alike, which moves log-probs by about 1e-4. ``gradient_checkpointing=False``
saves it a second forward that a model this small does not need.
"""

from __future__ import annotations

from typing import Any

from ..data.tokenizer import EOS_TOKEN, PAD_TOKEN, CharTokenizer

# The key under which TRL's DPOTrainer logs each of the lab's DPO numbers (``trainer.state.log_history``).
TRL_LOG_NAMES = {
    "loss": "loss",
    "chosen_reward": "rewards/chosen",
    "rejected_reward": "rewards/rejected",
    "reward_margin": "rewards/margins",
    "accuracy": "rewards/accuracies",
    "chosen_log_prob": "logps/chosen",
    "rejected_log_prob": "logps/rejected",
}

_INSTALL_HINT = 'the Hugging Face bridge needs transformers and TRL: pip install "dpolab[trl]"'


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{_INSTALL_HINT} ({err})") from err


def hf_char_tokenizer(tokenizer: CharTokenizer | None = None) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` with exactly the ids of ``tokenizer`` (a :class:`CharTokenizer`).

    One token per character (a ``tokenizers`` WordLevel model over single characters),
    ``<pad>`` = 0 and ``<eos>`` = 1 as special tokens (so the string ``"<eos>"`` that TRL
    appends to responses is one token), no BOS, and a decoder that joins characters
    without spaces.
    """
    transformers = _require("transformers")
    tokenizers = _require("tokenizers")
    tokenizer = tokenizer or CharTokenizer()
    model = tokenizers.models.WordLevel(vocab=tokenizer.vocab(), unk_token=None)
    backend = tokenizers.Tokenizer(model)
    # Split into single characters ("isolated": every character its own piece, spaces included).
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex("."), behavior="isolated", invert=False
    )
    backend.decoder = tokenizers.decoders.Fuse()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, padding_side="right"
    )


def tiny_llama(
    vocab_size: int,
    hidden_size: int = 128,
    num_hidden_layers: int = 3,
    num_attention_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 64,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``LlamaForCausalLM``: float32, tied embeddings, no BOS, initialised from ``seed``.

    Only the initialisation is seeded (torch's global generator is restored afterwards).
    ``intermediate_size`` defaults to 4 × ``hidden_size``, as in :class:`~dpolab.TinyGPT`.
    """
    transformers = _require("transformers")
    torch = _require("torch")
    config = transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    return model
