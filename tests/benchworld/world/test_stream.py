"""The pretraining stream: shapes, determinism, and coverage of every label."""

from __future__ import annotations

import numpy as np
import torch

from benchworld.world.config import WorldConfig
from benchworld.world.stream import PretrainBatches, PretrainStream
from benchworld.world.vocabulary import LabelKind, default_vocabulary


def test_batches_are_deterministic_and_well_formed() -> None:
    stream = PretrainStream(WorldConfig(), batch_size=8, context_length=24)
    a, b = stream.batch(3), PretrainStream(WorldConfig(), batch_size=8, context_length=24).batch(3)
    assert a.images.shape == (8, 64, 64, 3) and a.images.dtype == np.uint8
    assert a.tokens.shape == (8, 24) and a.tokens.dtype == np.int64
    assert np.array_equal(a.images, b.images) and np.array_equal(a.tokens, b.tokens) and a.captions == b.captions
    assert np.all(a.tokens[:, 0] == stream.tokenizer.sot)
    assert not np.array_equal(a.images, stream.batch(4).images)


def test_dataset_view_yields_channels_first_tensors() -> None:
    stream = PretrainStream(WorldConfig(), batch_size=4, context_length=20)
    images, tokens = PretrainBatches(stream, count=2, first=5)[1]
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert tokens.shape == (4, 20)
    np.testing.assert_array_equal(images.permute(0, 2, 3, 1).numpy(), stream.batch(6).images)


def test_every_label_is_shown_and_named_in_the_stream() -> None:
    # Pretraining covers ALL labels, seen and unseen: each is in some image and in some caption.
    vocab = default_vocabulary()
    stream = PretrainStream(WorldConfig(), batch_size=1, context_length=24)
    shown: set[str] = set()
    named: set[str] = set()
    for i in range(1500):
        _, caption, labels = stream.pair(i)
        shown |= labels
        named |= {
            vocab.word_index[w]
            for w in caption.replace(",", " ").replace(".", " ").replace("!", " ").split()
            if w in vocab.word_index
        }
    assert shown == set(vocab.names)
    assert named == set(vocab.names)


def test_twins_differ_in_one_colour_or_pattern() -> None:
    vocab = default_vocabulary()
    kinds = dict(zip(vocab.names, vocab.kinds, strict=True))
    stream = PretrainStream(WorldConfig(), batch_size=8)
    found = 0
    for i in range(0, 60, 2):
        twins = stream.twins(i)
        if twins is None:
            continue
        found += 1
        (img_a, cap_a, lab_a), (img_b, cap_b, lab_b) = twins
        changed = (img_a != img_b).any(axis=-1).mean()
        assert 0 < changed < 0.25, changed  # one object repainted, the rest identical
        assert {kinds[n] for n in lab_a ^ lab_b} <= {LabelKind.COLOUR, LabelKind.PATTERN}
        assert cap_a != cap_b
        for caption, labels in ((cap_a, lab_a), (cap_b, lab_b)):
            named = {vocab.word_index[w] for w in caption.split() if w in vocab.word_index}
            assert named and named <= labels, (caption, sorted(labels))
    assert found >= 8


def test_batches_hold_twin_pairs_then_ordinary_pairs() -> None:
    stream = PretrainStream(WorldConfig(), batch_size=16, twin_share=0.5)
    batch = stream.batch(0)
    assert stream.twin_pairs == 4
    near = [(batch.images[2 * j] != batch.images[2 * j + 1]).any(axis=-1).mean() < 0.25 for j in range(4)]
    assert any(near)  # scenes without a variable object fall back to two ordinary images
    assert PretrainStream(WorldConfig(), batch_size=16, twin_share=0.0).twin_pairs == 0
