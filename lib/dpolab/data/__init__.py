"""Data: preference pairs and their JSONL files, and batching token ids into tensors.

:mod:`.preferences` builds (prompt, chosen, rejected) pairs and reads/writes JSONL;
:mod:`.batching` turns token ids into right-padded rows with attention and loss masks.
"""

from .batching import PreferenceBatch, SequenceBatch, collate_preferences, pad_sequences
from .preferences import PreferenceDatasetGenerator, PreferencePair, load_jsonl, save_jsonl

__all__ = [
    "PreferenceBatch",
    "PreferenceDatasetGenerator",
    "PreferencePair",
    "SequenceBatch",
    "collate_preferences",
    "load_jsonl",
    "pad_sequences",
    "save_jsonl",
]
