"""The vocabulary: size, kinds, real words, unambiguous caption words, and the fixed split."""

from __future__ import annotations

import re

import pytest

from benchworld.world.appearance import COLOURS, OBJECT_STYLES, PATTERN_COVERAGE
from benchworld.world.captions import _SCENE_ONLY, _SCENE_PHRASES
from benchworld.world.textures import SCENE_NAMES
from benchworld.world.vocabulary import LabelKind, Vocabulary, default_vocabulary


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return default_vocabulary()


def test_at_least_60_labels_of_four_kinds(vocab: Vocabulary) -> None:
    assert len(vocab) >= 60
    counts = {kind: len(vocab.names_of(kind)) for kind in LabelKind}
    assert all(n >= 8 for n in counts.values()), counts


def test_label_names_are_lowercase_words(vocab: Vocabulary) -> None:
    for name in vocab.names:
        assert re.fullmatch(r"[a-z]+", name), name


def test_every_label_is_rendered(vocab: Vocabulary) -> None:
    assert set(vocab.names_of(LabelKind.OBJECT)) == set(OBJECT_STYLES)
    assert set(vocab.names_of(LabelKind.COLOUR)) == set(COLOURS)
    assert set(vocab.names_of(LabelKind.PATTERN)) == set(PATTERN_COVERAGE)
    assert set(vocab.names_of(LabelKind.SCENE)) == set(SCENE_NAMES) == set(_SCENE_PHRASES) == set(_SCENE_ONLY)


def test_caption_words_name_one_label_each(vocab: Vocabulary) -> None:
    index = vocab.word_index  # raises on a word shared by two labels
    for spec in vocab.labels:
        for word in spec.words:
            assert index[word] == spec.name


def test_unseen_split_is_about_a_quarter_of_each_kind(vocab: Vocabulary) -> None:
    assert 0.2 <= len(vocab.unseen) / len(vocab) <= 0.3
    for kind in LabelKind:
        names = vocab.names_of(kind)
        unseen = [n for n in names if n in vocab.unseen]
        assert 1 <= len(unseen) <= round(0.25 * len(names)) + 1, (kind, unseen)
    assert vocab.seen_mask.sum() == len(vocab) - len(vocab.unseen)
    assert set(vocab.seen_names).isdisjoint(vocab.unseen_names)


def test_split_is_pinned(vocab: Vocabulary) -> None:
    # Changing the split changes the benchmark: bump VOCABULARY_VERSION and update this list.
    assert sorted(vocab.unseen) == [
        "asphalt", "black", "cookie", "crow", "flower", "giraffe", "goldfish", "panda", "pink", "pizza",
        "sand", "snow", "wavy", "white", "zebra", "zigzag",
    ]  # fmt: skip
    assert default_vocabulary().fingerprint == vocab.fingerprint


def test_unknown_unseen_label_is_rejected(vocab: Vocabulary) -> None:
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Vocabulary(vocab.labels, frozenset({"unicorn"}))


def test_multi_hot(vocab: Vocabulary) -> None:
    vec = vocab.multi_hot(["zebra", "sky"])
    assert vec.sum() == 2 and vec[vocab.index("zebra")] == 1 and vec[vocab.index("sky")] == 1
