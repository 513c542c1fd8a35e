"""Tests for dpolab.data.preferences: pair generation, validation and the JSONL format."""

from __future__ import annotations

import json
import random

import pytest

from dpolab.data.preferences import (
    FILLERS,
    REFUSAL,
    PreferenceDatasetGenerator,
    PreferencePair,
    load_jsonl,
    save_jsonl,
)

# ---------------------------------------------------------------------- helpers


def scored(prompt, *items):
    """Records for one prompt from (response, score) tuples."""
    return [{"prompt": prompt, "response": r, "score": s} for r, s in items]


def as_tuples(pairs):
    return [(p.prompt, p.chosen, p.rejected, p.chosen_score, p.rejected_score) for p in pairs]


def single(response, prompt="Q?"):
    return [{"prompt": prompt, "response": response}]


def strip_fillers(text):
    """Remove every filler from a perturbed text (the chosen texts used here contain none)."""
    for filler in sorted(FILLERS, key=len, reverse=True):
        text = text.replace(f" {filler}", "")
    return text


LONG = " ".join(f"w{i}" for i in range(30))
FOUR_SENTENCES = "Alpha one. Beta two. Gamma three. Delta four."

# ---------------------------------------------------------------------- PreferencePair


def test_pair_to_dict():
    pair = PreferencePair("p", "c", "r", chosen_score=2.0)
    assert pair.to_dict() == {
        "prompt": "p",
        "chosen": "c",
        "rejected": "r",
        "chosen_score": 2.0,
        "rejected_score": None,
        "metadata": {},
    }
    assert PreferencePair("p", "c", "r", metadata={"k": 1}).to_dict()["metadata"] == {"k": 1}


def test_quality_score_is_mean_of_scorers():
    gen = PreferenceDatasetGenerator()
    assert gen.compute_quality_score("p", "resp") == 0.0
    gen.add_scorer(lambda p, r: 1.0)
    gen.add_scorer(lambda p, r: float(len(r)))  # 4.0 for "resp"
    assert gen.compute_quality_score("p", "resp") == 2.5


# ---------------------------------------------------------------------- from_scored_responses


def test_scored_pairs_best_with_worst():
    # Input order is scrambled; sorted: r5 r4 r3 r2 r1 -> (r5, r1) gap 4, (r4, r2) gap 2; r3 is unused.
    data = scored("p", ("r3", 3), ("r5", 5), ("r1", 1), ("r4", 4), ("r2", 2))
    pairs = PreferenceDatasetGenerator(min_score_diff=1.5).from_scored_responses(data)
    assert as_tuples(pairs) == [("p", "r5", "r1", 5.0, 1.0), ("p", "r4", "r2", 4.0, 2.0)]
    assert pairs[0].metadata is None


@pytest.mark.parametrize(
    ("min_diff", "expected"),
    [
        (2.0, [("r5", "r1"), ("r4", "r2")]),  # gap 2 == threshold: kept
        (2.5, [("r5", "r1")]),  # gap 2 < 2.5: dropped
        (4.0, [("r5", "r1")]),  # gap 4 == threshold: kept
        (4.5, []),
    ],
)
def test_scored_threshold_is_inclusive(min_diff, expected):
    data = scored("p", ("r1", 1), ("r2", 2), ("r3", 3), ("r4", 4), ("r5", 5))
    pairs = PreferenceDatasetGenerator(min_score_diff=min_diff).from_scored_responses(data)
    assert [(p.chosen, p.rejected) for p in pairs] == expected


def test_scored_threshold_tolerates_float_rounding():
    # 0.7 - 0.2 == 0.49999999999999994 in floating point; it still meets 0.5.
    assert 0.7 - 0.2 < 0.5
    pairs = PreferenceDatasetGenerator(min_score_diff=0.5).from_scored_responses(
        scored("p", ("good", 0.7), ("bad", 0.2))
    )
    assert as_tuples(pairs) == [("p", "good", "bad", 0.7, 0.2)]


def test_scored_groups_in_first_seen_order_and_skips_singletons():
    data = [
        {"prompt": "B", "response": "b-low", "score": 0},
        {"prompt": "lonely", "response": "only one", "score": 9},
        {"prompt": "A", "response": "a-high", "score": 3},
        {"prompt": "B", "response": "b-high", "score": 1},
        {"prompt": "A", "response": "a-low", "score": 1},
        {"prompt": "close", "response": "x", "score": 1.0},
        {"prompt": "close", "response": "y", "score": 1.4},  # gap 0.4 < 0.5
    ]
    pairs = PreferenceDatasetGenerator().from_scored_responses(data)
    assert as_tuples(pairs) == [("B", "b-high", "b-low", 1.0, 0.0), ("A", "a-high", "a-low", 3.0, 1.0)]


def test_scored_ties_keep_input_order():
    # Stable sort: a, b (score 3) then c, d (score 1) -> (a, d), (b, c).
    data = scored("p", ("a", 3), ("c", 1), ("b", 3), ("d", 1))
    pairs = PreferenceDatasetGenerator(min_score_diff=2).from_scored_responses(data)
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "d"), ("b", "c")]


def test_scored_stops_at_first_small_gap():
    # Sorted 10, 9, 8, 2, 1, 0: gaps 10, 7, 6 -> all kept with threshold 6; with 7 the third is cut.
    data = scored("p", *[(f"r{s}", s) for s in (0, 1, 2, 8, 9, 10)])
    assert len(PreferenceDatasetGenerator(min_score_diff=6).from_scored_responses(data)) == 3
    pairs = PreferenceDatasetGenerator(min_score_diff=7).from_scored_responses(data)
    assert [(p.chosen, p.rejected) for p in pairs] == [("r10", "r0"), ("r9", "r1")]


def test_scored_custom_keys():
    data = [{"q": "p", "a": "hi", "rating": 5}, {"q": "p", "a": "lo", "rating": 1}]
    pairs = PreferenceDatasetGenerator().from_scored_responses(
        data, prompt_key="q", response_key="a", score_key="rating"
    )
    assert as_tuples(pairs) == [("p", "hi", "lo", 5.0, 1.0)]


@pytest.mark.parametrize("missing", ["prompt", "response", "score"])
def test_scored_missing_key_names_record(missing):
    data = scored("p", ("a", 1), ("b", 2), ("c", 3), ("d", 4))
    del data[3][missing]
    with pytest.raises(ValueError, match=rf"record 3 has no '{missing}' key"):
        PreferenceDatasetGenerator().from_scored_responses(data)


@pytest.mark.parametrize("bad", ["high", None, True, float("nan")])
def test_scored_non_numeric_score_names_record(bad):
    data = scored("p", ("a", 1), ("b", bad))
    with pytest.raises(ValueError, match=r"record 1: 'score' must be a number"):
        PreferenceDatasetGenerator().from_scored_responses(data)


def test_scored_bad_record_in_singleton_group_is_still_reported():
    data = scored("p", ("a", 1), ("b", 2)) + scored("other", ("c", "?"))
    with pytest.raises(ValueError, match=r"record 2"):
        PreferenceDatasetGenerator().from_scored_responses(data)


# ---------------------------------------------------------------------- from_single_responses


def test_truncate_keeps_first_third_of_words():
    gen = PreferenceDatasetGenerator()
    data = [
        {"prompt": "a", "response": "one two three four five six seven"},  # 7 // 3 = 2 words
        {"prompt": "b", "response": "one  two\nthree four five six"},  # 6 // 3 = 2 words
        {"prompt": "c", "response": "one two"},  # max(1, 0) = 1 word
    ]
    pairs = gen.from_single_responses(data, rejection_strategy="truncate")
    assert [p.rejected for p in pairs] == ["one two", "one two", "one"]
    assert [p.chosen for p in pairs] == [d["response"] for d in data]
    assert [p.prompt for p in pairs] == ["a", "b", "c"]
    assert all(p.metadata == {"strategy": "truncate"} for p in pairs)
    assert all(p.chosen_score is None and p.rejected_score is None for p in pairs)


def test_refuse_gives_refusal():
    (pair,) = PreferenceDatasetGenerator().from_single_responses(
        single("A helpful answer."), rejection_strategy="refuse"
    )
    assert pair.rejected == REFUSAL == "I'm sorry, but I can't help with that."
    assert pair.metadata == {"strategy": "refuse"}


def test_perturb_follows_documented_rule():
    # Oracle: the rule in the docstring, replayed on a fresh Random with the same seed.
    (pair,) = PreferenceDatasetGenerator(seed=3).from_single_responses(single(LONG))
    ref = random.Random(3)
    expected = []
    for i, word in enumerate(LONG.split()):
        expected.append(word)
        if i % 5 == 0 and ref.random() > 0.5:
            expected.append(ref.choice(FILLERS))
    assert len(expected) > 30  # this seed inserts fillers, so no fallback here
    assert pair.rejected == " ".join(expected)
    assert pair.rejected != pair.chosen
    assert strip_fillers(pair.rejected) == LONG
    assert pair.metadata == {"strategy": "perturb"}


def test_perturb_fallback_inserts_after_first_word():
    # With seed 1 the first random() is 0.134 <= 0.5, so the loop inserts nothing into a
    # one-word text and the fallback must insert one filler after it.
    assert random.Random(1).random() <= 0.5
    (pair,) = PreferenceDatasetGenerator(seed=1).from_single_responses(single("Hello"))
    assert pair.rejected.startswith("Hello ")
    assert pair.rejected[len("Hello ") :] in FILLERS
    # Whatever the seed, a one-word text gets exactly one filler.
    for seed in range(20):
        (pair,) = PreferenceDatasetGenerator(seed=seed).from_single_responses(single("Hello"))
        assert pair.rejected[len("Hello ") :] in FILLERS


def test_perturb_always_differs_from_chosen():
    texts = [f"Sentence number {i} has a few words in it." for i in range(50)]
    data = [{"prompt": str(i), "response": t} for i, t in enumerate(texts)]
    pairs = PreferenceDatasetGenerator(seed=0).from_single_responses(data)
    for pair in pairs:
        assert pair.rejected != pair.chosen
        assert strip_fillers(pair.rejected) == pair.chosen


def test_shuffle_uses_generator_rng():
    (pair,) = PreferenceDatasetGenerator(seed=0).from_single_responses(
        single(FOUR_SENTENCES), rejection_strategy="shuffle"
    )
    order = ["Alpha one", "Beta two", "Gamma three", "Delta four"]
    random.Random(0).shuffle(order)
    assert order == ["Gamma three", "Alpha one", "Beta two", "Delta four"]
    # The final "." stays at the end instead of travelling with "Delta four".
    assert pair.rejected == "Gamma three. Alpha one. Beta two. Delta four."
    assert pair.metadata == {"strategy": "shuffle"}


def test_shuffle_two_sentences_always_swapped():
    # A plain shuffle keeps the order of two items for some seeds (e.g. 0); the rule then reverses.
    kept = []
    for seed in range(10):
        order = ["a", "b"]
        random.Random(seed).shuffle(order)
        kept += [seed] if order == ["a", "b"] else []
    assert kept == [0, 5, 7, 9]  # the fallback is exercised below
    for seed in range(10):
        (pair,) = PreferenceDatasetGenerator(seed=seed).from_single_responses(
            single("First one. Second one."), rejection_strategy="shuffle"
        )
        assert pair.rejected == "Second one. First one."


def test_shuffle_single_sentence_reverses_words():
    (pair,) = PreferenceDatasetGenerator(seed=0).from_single_responses(
        single("The cat sat on the mat"), rejection_strategy="shuffle"
    )
    assert pair.rejected == "mat the on sat cat The"


def test_shuffle_always_differs_from_chosen():
    data = [{"prompt": str(s), "response": FOUR_SENTENCES} for s in range(40)]
    for pair in PreferenceDatasetGenerator(seed=5).from_single_responses(data, rejection_strategy="shuffle"):
        assert pair.rejected != pair.chosen
        assert sorted(pair.rejected.rstrip(".").split(". ")) == sorted(FOUR_SENTENCES.rstrip(".").split(". "))


@pytest.mark.parametrize(("strategy", "text"), [("perturb", LONG), ("shuffle", FOUR_SENTENCES)])
def test_same_seed_same_pairs_different_seed_differs(strategy, text):
    data = [{"prompt": str(i), "response": text} for i in range(5)]

    def run(seed):
        # Moving the global random state must not matter: the generator has its own rng.
        random.seed(seed + 1000)
        return PreferenceDatasetGenerator(seed=seed).from_single_responses(data, rejection_strategy=strategy)

    assert run(0) == run(0)
    assert run(1) == run(1)
    # Seed 0 vs 1 (checked): first rejected differs, e.g. shuffle gives "Gamma three. ..." vs "Delta four. ...".
    assert run(0)[0].rejected != run(1)[0].rejected


def test_generator_does_not_touch_global_random():
    random.seed(123)
    before = random.getstate()
    PreferenceDatasetGenerator(seed=0).from_single_responses(single(LONG))
    PreferenceDatasetGenerator(seed=0).from_single_responses(
        single(FOUR_SENTENCES), rejection_strategy="shuffle"
    )
    assert random.getstate() == before


def test_unknown_strategy_raises_before_reading_records():
    bad_records = [{"no": "keys"}]  # would fail on its own, but the strategy is checked first
    with pytest.raises(ValueError, match=r"'reverse'.*perturb, truncate, shuffle, refuse"):
        PreferenceDatasetGenerator().from_single_responses(bad_records, rejection_strategy="reverse")


@pytest.mark.parametrize("missing", ["prompt", "response"])
def test_single_missing_key_names_record(missing):
    data = [{"prompt": "a", "response": "x y z"}, {"prompt": "b", "response": "x y z"}]
    del data[1][missing]
    with pytest.raises(ValueError, match=rf"record 1 has no '{missing}' key"):
        PreferenceDatasetGenerator().from_single_responses(data, rejection_strategy="truncate")


# ---------------------------------------------------------------------- validation and export


def test_validate_pairs_drops_short_and_identical():
    ok = PreferencePair("p", "A good long answer.", "A bad answer.")
    boundary = PreferencePair("p", "0123456789", "abcdefghij")  # exactly 10 chars each: kept
    short_chosen = PreferencePair("p", "012345678", "A rejected answer.")  # 9 chars
    short_rejected = PreferencePair("p", "A chosen answer.", "no")
    same = PreferencePair("p", "Same answer here.", "  Same answer here.\n")
    pairs = [ok, short_chosen, boundary, short_rejected, same]

    gen = PreferenceDatasetGenerator()
    assert gen.validate_pairs(pairs) == [ok, boundary]

    valid, dropped = gen.validate_pairs_report(pairs)
    assert valid == [ok, boundary]
    assert dropped == [
        (short_chosen, "chosen is shorter than 10 characters"),
        (short_rejected, "rejected is shorter than 10 characters"),
        (same, "chosen and rejected are identical"),
    ]


def test_to_huggingface_format():
    pairs = [PreferencePair("p1", "c1", "r1", 1.0, 0.0, {"k": 1}), PreferencePair("p2", "c2", "r2")]
    assert PreferenceDatasetGenerator().to_huggingface_format(pairs) == [
        {"prompt": "p1", "chosen": "c1", "rejected": "r1"},
        {"prompt": "p2", "chosen": "c2", "rejected": "r2"},
    ]


# ---------------------------------------------------------------------- JSONL

RECORDS = [
    PreferencePair(
        "Qu'est-ce que l'apprentissage ?", "Réponse détaillée — naïve.", "Je ne sais pas.", 2.0, 1.0
    ),
    {"prompt": "日本語で説明して", "chosen": "機械学習とは…😀", "rejected": "知りません", "score": 3},
    PreferencePair("Line\nbreaks", 'Quote " and \\ backslash', "tab\there", metadata={"x": 1}),
]
EXPECTED = [
    {
        "prompt": "Qu'est-ce que l'apprentissage ?",
        "chosen": "Réponse détaillée — naïve.",
        "rejected": "Je ne sais pas.",
    },
    {"prompt": "日本語で説明して", "chosen": "機械学習とは…😀", "rejected": "知りません"},
    {"prompt": "Line\nbreaks", "chosen": 'Quote " and \\ backslash', "rejected": "tab\there"},
]


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "prefs.jsonl"
    save_jsonl(RECORDS, path)
    raw = path.read_bytes().decode("utf-8")
    lines = raw.split("\n")
    assert lines[-1] == "" and len(lines) == 4  # three lines, each ending in "\n"
    assert "日本語で説明して" in raw and "😀" in raw and "\\u" not in raw  # not ASCII-escaped
    assert [list(json.loads(line)) for line in lines[:-1]] == [["prompt", "chosen", "rejected"]] * 3
    assert load_jsonl(path) == EXPECTED
    assert load_jsonl(str(path)) == EXPECTED


def test_save_jsonl_rejects_bad_record(tmp_path):
    path = tmp_path / "bad.jsonl"
    with pytest.raises(ValueError, match=r"record 1 has no 'rejected' key"):
        save_jsonl([EXPECTED[0], {"prompt": "p", "chosen": "c"}], path)
    with pytest.raises(ValueError, match=r"record 0: 'chosen' must be a str"):
        save_jsonl([{"prompt": "p", "chosen": 1, "rejected": "r"}], path)
    assert not path.exists()  # nothing half-written


def test_datasets_reads_saved_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    # The env var is read when datasets is imported; patch the parsed flag too in case it already was.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)

    path = tmp_path / "prefs.jsonl"
    save_jsonl(RECORDS, path)
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert ds.num_rows == 3
    assert ds.to_list() == EXPECTED


def _write(tmp_path, text):
    path = tmp_path / "in.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = '{"prompt": "p", "chosen": "c", "rejected": "r"}'


@pytest.mark.parametrize(
    ("third_line", "message"),
    [
        ('{"prompt": "p", "chosen": "c",', r"line 3: invalid JSON"),
        ('["p", "c", "r"]', r"line 3: expected a JSON object, got list"),
        ('{"prompt": "p", "chosen": "c"}', r"line 3: no 'rejected' key"),
        ('{"prompt": "p", "chosen": 5, "rejected": "r"}', r"line 3: 'chosen' must be a string, got int"),
    ],
)
def test_load_jsonl_errors_name_line(tmp_path, third_line, message):
    # Line 2 is blank: skipped, but still counted in the line numbers.
    path = _write(tmp_path, f"{GOOD}\n\n{third_line}\n")
    with pytest.raises(ValueError, match=message):
        load_jsonl(path)


def test_load_jsonl_skips_blank_lines_keeps_extra_keys_and_bom(tmp_path):
    extra = '{"prompt": "p2", "chosen": "c2", "rejected": "r2", "score": 1}'
    path = _write(tmp_path, f"\ufeff{GOOD}\n   \n{extra}\n\n")
    assert load_jsonl(path) == [
        {"prompt": "p", "chosen": "c", "rejected": "r"},
        {"prompt": "p2", "chosen": "c2", "rejected": "r2", "score": 1},
    ]
