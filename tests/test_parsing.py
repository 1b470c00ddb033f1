"""Strict LALM answer parsing: label words, synonyms, JSON distributions, ambiguity -> None."""

from __future__ import annotations

import numpy as np
import pytest

from edgeser.adapt.teachers.parsing import DEFAULT_SYNONYMS, LabelParser, parse_answer

LABELS = ["neutral", "happy", "sad", "angry"]


def hot(label: str, labels: list[str] = LABELS) -> np.ndarray:
    v = np.zeros(len(labels))
    v[labels.index(label)] = 1
    return v


@pytest.mark.parametrize(
    "text,label",
    [
        ("angry", "angry"),
        ("Angry", "angry"),
        ("ANGRY.", "angry"),
        ("**Sad**", "sad"),
        ("`happy`", "happy"),
        ('"neutral"', "neutral"),
        ("'sad'!", "sad"),
        ("  Happy \n", "happy"),
        ("# Angry", "angry"),
        ("anger", "angry"),
        ("Mad", "angry"),
        ("furious!", "angry"),
        ("happiness", "happy"),
        ("Joy", "happy"),
        ("joyful", "happy"),
        ("excited", "happy"),
        ("sadness", "sad"),
        ("sorrow", "sad"),
        ("unhappy", "sad"),
        ("“sad”", "sad"),
        ("_neutral_", "neutral"),
    ],
)
def test_single_label_word_and_synonyms(text: str, label: str) -> None:
    np.testing.assert_array_equal(parse_answer(text, LABELS), hot(label))


@pytest.mark.parametrize(
    "text,label",
    [
        ("The speaker sounds angry.", "angry"),
        ("Emotion: sad", "sad"),
        ("I would say the speaker is happy, clearly happy.", "happy"),
        ("Anger. The voice is loud and angry.", "angry"),  # two synonyms of one label is not ambiguous
    ],
)
def test_free_text_naming_one_label(text: str, label: str) -> None:
    np.testing.assert_array_equal(parse_answer(text, LABELS), hot(label))


@pytest.mark.parametrize(
    "text",
    [
        "angry or sad",
        "Either happy or neutral.",
        "The speaker is not angry.",
        "I don't think it's sad",
        "no emotion",
        "fearful",
        "disgust",
        "surprised",
        "calm",
        "none",
        "None of these",
        "",
        "   ",
        "?!",
        "I cannot tell.",
        "42",
        "[0.1, 0.9]",
        "{}",
        "{not json",
        "happy sad",
    ],
)
def test_unknown_or_ambiguous_is_none(text: str) -> None:
    assert parse_answer(text, LABELS) is None


def test_calm_is_not_neutral_but_is_its_own_label() -> None:
    assert parse_answer("calm", LABELS) is None
    np.testing.assert_array_equal(parse_answer("Calm.", ["calm", "happy"]), hot("calm", ["calm", "happy"]))


def test_json_distribution_is_normalised_and_mapped() -> None:
    np.testing.assert_allclose(parse_answer('{"angry": 0.7, "sad": 0.3}', LABELS), [0, 0, 0.3, 0.7])
    np.testing.assert_allclose(parse_answer('{"Anger": 3, "sadness": 1}', LABELS), [0, 0, 0.25, 0.75])
    # synonyms of one label are summed; zero mass on an unknown key is ignored
    np.testing.assert_allclose(parse_answer('{"angry": 1, "mad": 1, "fear": 0}', LABELS), [0, 0, 0, 1])
    np.testing.assert_allclose(parse_answer('```json\n{"happy": 1, "neutral": 1}\n```', LABELS), [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(parse_answer('{"probabilities": {"sad": 2, "happy": 2}}', LABELS), [0, 0.5, 0.5, 0])


@pytest.mark.parametrize(
    "text",
    [
        '{"angry": -0.1, "sad": 1.1}',
        '{"angry": NaN, "sad": 1}',
        '{"angry": Infinity}',
        '{"angry": "0.5"}',
        '{"angry": true}',
        '{"angry": 0, "sad": 0}',
        '{"fear": 0.5, "sad": 0.5}',
        '{"angry": null}',
    ],
)
def test_bad_json_distributions_are_rejected(text: str) -> None:
    assert parse_answer(text, LABELS) is None


def test_json_label_object() -> None:
    np.testing.assert_array_equal(parse_answer('{"label": "sad"}', LABELS), hot("sad"))
    np.testing.assert_array_equal(parse_answer('{"label": "Furious", "confidence": 0.9}', LABELS), hot("angry"))
    np.testing.assert_array_equal(parse_answer('{"emotion": "happy"}', LABELS), hot("happy"))
    assert parse_answer('{"label": "fear"}', LABELS) is None
    assert parse_answer('{"label": "angry or sad"}', LABELS) is None
    assert parse_answer('"sad"', LABELS) is not None


def test_never_raises_on_odd_input() -> None:
    for bad in (None, 3, b"angry", ["angry"], "{" * 10000, "\x00angry\x00?"):
        parse_answer(bad, LABELS)  # type: ignore[arg-type]
    assert parse_answer("angry", []) is None
    assert parse_answer("angry", ["angry", "angry"]) is None


def test_groups_follow_the_label_names() -> None:
    labels = ["anger", "happiness", "sadness", "neutral"]
    np.testing.assert_array_equal(parse_answer("angry", labels), hot("anger", labels))
    np.testing.assert_array_equal(parse_answer("joy", labels), hot("happiness", labels))
    # a group covering two labels of the set maps only the labels' own names
    five = ["neutral", "happy", "excited", "sad", "angry"]
    np.testing.assert_array_equal(parse_answer("excited", five), hot("excited", five))
    np.testing.assert_array_equal(parse_answer("happy", five), hot("happy", five))
    assert parse_answer("joy", five) is None


def test_callers_extend_the_table() -> None:
    p = LabelParser(LABELS, synonyms={"calm": "neutral", "no emotion": "neutral", "livid": "angry"})
    np.testing.assert_array_equal(p.parse("Calm"), hot("neutral"))
    np.testing.assert_array_equal(p.parse("No emotion."), hot("neutral"))
    np.testing.assert_array_equal(p.parse("livid"), hot("angry"))
    with pytest.raises(ValueError, match="not in the label set"):
        LabelParser(LABELS, synonyms={"scared": "fear"})
    assert "calm" not in DEFAULT_SYNONYMS["neutral"]
    assert "none" not in {w for ws in DEFAULT_SYNONYMS.values() for w in ws}
