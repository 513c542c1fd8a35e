"""A character-level tokenizer: one token per character, nothing to download.

Id 0 is padding and id 1 marks the end of a response (EOS); every other id is one
character of a fixed alphabet. Real tokenizers (BPE, WordPiece) merge frequent strings
into single tokens; for short arithmetic a character is the natural unit, and every id
can be read back at a glance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

#: The characters the lab's tasks use: digits, arithmetic signs, space, lowercase letters.
DEFAULT_ALPHABET = "0123456789+-*=?:. abcdefghijklmnopqrstuvwxyz"

PAD_TOKEN = "<pad>"
EOS_TOKEN = "<eos>"


class CharTokenizer:
    """``encode(str) -> list[int]`` and ``decode(list[int]) -> str``, one id per character.

    ``decode`` skips padding and stops at the first EOS (pass ``skip_special=False`` to see
    them as ``<pad>`` / ``<eos>``).
    """

    pad_token_id = 0
    eos_token_id = 1

    def __init__(self, alphabet: str = DEFAULT_ALPHABET):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"alphabet must not repeat characters, got {alphabet!r}")
        if not alphabet:
            raise ValueError("alphabet must hold at least one character")
        self.alphabet = alphabet
        self.special_tokens = (PAD_TOKEN, EOS_TOKEN)
        self._stoi = {ch: i + len(self.special_tokens) for i, ch in enumerate(alphabet)}
        self._itos = dict(enumerate(self.special_tokens)) | {i: ch for ch, i in self._stoi.items()}

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_eos`` appends the EOS id (how responses end)."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        try:
            ids = [self._stoi[ch] for ch in text]
        except KeyError as err:
            raise ValueError(
                f"text holds {err.args[0]!r}, which is not in the tokenizer's alphabet {self.alphabet!r}"
            ) from None
        return ids + [self.eos_token_id] if add_eos else ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of ``ids`` (a list or a 1-D tensor)."""
        out = []
        for i in (int(t) for t in ids):
            if i not in self._itos:
                raise ValueError(f"ids holds {i}, outside the vocabulary [0, {self.vocab_size})")
            if skip_special:
                if i == self.eos_token_id:
                    break
                if i == self.pad_token_id:
                    continue
            out.append(self._itos[i])
        return "".join(out)

    def batch_decode(self, rows: Iterable[Sequence[int]], skip_special: bool = True) -> list[str]:
        return [self.decode(r, skip_special) for r in rows]

    def vocab(self) -> dict[str, int]:
        """Token string → id, special tokens included (what a Hugging Face tokenizer is built from)."""
        return {tok: i for i, tok in self._itos.items()}

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, alphabet={self.alphabet!r})"
