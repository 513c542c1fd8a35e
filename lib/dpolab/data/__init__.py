"""Data: preference pairs and their JSONL files, a tokenizer, a synthetic task, batching.

:mod:`.preferences` builds (prompt, chosen, rejected) pairs (notebook 03's exercises);
:mod:`.jsonl` reads and writes them; :mod:`.tokenizer` is the lab's character-level
tokenizer; :mod:`.arithmetic` is the synthetic task notebook 04 trains on; :mod:`.batching`
turns token ids into right-padded rows with attention and loss masks, and
:class:`~dpolab.data.batching.PreferenceData` gathers training batches from tokenised pairs.
"""

from dpolab._exports import absent_getattr, export, public

# module -> public names; a reference module (dpolab._exports.REFERENCE_MODULES) may be absent
_NAMES = {
    ".arithmetic": ["ArithmeticTask"],
    ".batching": [
        "PreferenceBatch",
        "PreferenceData",
        "SequenceBatch",
        "collate_preferences",
        "encode_examples",
        "encode_pairs",
        "pad_sequences",
    ],
    ".jsonl": ["load_jsonl", "save_jsonl"],
    ".preferences": ["PreferenceDatasetGenerator", "PreferencePair"],  # reference
    ".tokenizer": ["CharTokenizer"],
}
_absent = export(globals(), _NAMES)
__getattr__ = absent_getattr(__name__, _absent)
__all__ = public(_NAMES, _absent)
