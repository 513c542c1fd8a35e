"""Data: preference pairs and their JSONL files, a tokenizer, a synthetic task, batching.

:mod:`.preferences` builds (prompt, chosen, rejected) pairs and reads/writes JSONL;
:mod:`.tokenizer` is the lab's character-level tokenizer; :mod:`.arithmetic` is the
synthetic task notebook 04 trains on; :mod:`.batching` turns token ids into right-padded
rows with attention and loss masks.
"""

from .arithmetic import ArithmeticTask
from .batching import (
    PreferenceBatch,
    SequenceBatch,
    collate_preferences,
    encode_examples,
    encode_pairs,
    pad_sequences,
)
from .preferences import PreferenceDatasetGenerator, PreferencePair, load_jsonl, save_jsonl
from .tokenizer import CharTokenizer

__all__ = [
    "ArithmeticTask",
    "CharTokenizer",
    "PreferenceBatch",
    "PreferenceDatasetGenerator",
    "PreferencePair",
    "SequenceBatch",
    "collate_preferences",
    "encode_examples",
    "encode_pairs",
    "load_jsonl",
    "pad_sequences",
    "save_jsonl",
]
