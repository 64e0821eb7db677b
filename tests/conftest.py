"""Shared test helpers: small scores and tiny trained models built in memory."""

import random

import numpy as np
import pytest

from musicgen.score import Note, Score
from musicgen.tokens import Vocabulary, encode

TINY_MODEL = dict(embedding_size=8, layers=1, units=16, dropout=0.0)


def scale_piece(seed: int, notes: int = 48) -> Score:
    """A short on-grid piece of C-major chords and runs, different for each seed."""
    rng = random.Random(seed)
    pitches, events, beat = [60, 62, 64, 65, 67, 69, 71, 72], [], 0.0
    for _ in range(notes // 2):
        root = rng.choice(pitches)
        length = rng.choice([0.5, 1.0])
        events += [Note(beat, root, beat + length, 72), Note(beat, root - 12, beat + length, 72)]
        beat += length
    return Score(tuple(events))


@pytest.fixture(scope="session")
def token_sequences() -> list[np.ndarray]:
    """Twelve short pieces as token arrays of the default vocabulary."""
    return [np.array(encode(scale_piece(seed), Vocabulary()), np.int32) for seed in range(12)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, token_sequences):
    """A run folder of a tiny model trained one epoch on `token_sequences`."""
    from musicgen.bundle import BundleInfo
    from musicgen.settings import ModelConfig, TrainConfig
    from musicgen.train import train_sequences

    folder, vocabulary = tmp_path_factory.mktemp("run"), Vocabulary()
    config = TrainConfig(epochs=1, sequence_length=16, batch_size=8)
    model_config = ModelConfig(vocabulary_size=len(vocabulary), **TINY_MODEL)
    train_sequences(token_sequences, folder, BundleInfo(model_config, vocabulary, "0" * 64, ["x.mid"], config))
    return folder


@pytest.fixture
def space(tmp_path):
    """A new, empty visitor workspace (musicgen.workspace.Workspace)."""
    from musicgen.workspace import Workspace

    return Workspace.create(tmp_path / "runs")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """The folder of a tiny model trained on a few tunes (tests.test_sessions.train_tiny_model)."""
    from tests.test_sessions import train_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return train_tiny_model(root / "tiny", root / "music")
