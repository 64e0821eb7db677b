"""The sampler against the Keras model it runs, on a tiny trained network."""

import numpy as np
import pytest

from musicgen import midi
from musicgen.bundle import BundleInfo, load_bundle
from musicgen.model import ModelConfig
from musicgen.sample import (
    MAX_PRIMER_TOKENS,
    SampleConfig,
    Sampler,
    allowed_token_mask,
    follow_mask,
    opening_mask,
    primer_from_score,
    scale_pitch_classes,
)
from musicgen.score import Note, Score
from musicgen.tokens import END, START, TokenConfig, Vocabulary, decode
from musicgen.train import TrainConfig, train_sequences
from tests.conftest import TINY_MODEL, scale_piece

VOCABULARY = Vocabulary()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, token_sequences):
    folder = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=3, sequence_length=16, batch_size=8, learning_rate=0.01)
    model_config = ModelConfig(vocabulary_size=len(VOCABULARY), **TINY_MODEL)
    train_sequences(token_sequences, folder, BundleInfo(model_config, VOCABULARY, "0" * 64, [], config))
    return load_bundle(folder)


@pytest.fixture(scope="module")
def sampler(trained):
    return Sampler(trained.model, VOCABULARY)


def test_greedy_sampling_follows_the_keras_model_step_by_step(trained, sampler):
    generated = sampler.generate(SampleConfig(temperature=0.0, max_notes=12))[0]
    allowed = allowed_token_mask(VOCABULARY, None)
    may_follow, opening = follow_mask(VOCABULARY), opening_mask(VOCABULARY)
    notes = 0
    for position in range(1, min(len(generated), 30)):
        logits = trained.model(np.array([generated[:position]]))[0, -1].numpy()
        mask = allowed & may_follow[generated[position - 1]] & (opening | (notes > 0))
        assert generated[position] == int(np.argmax(np.where(mask, logits, -np.inf)))
        notes += int(VOCABULARY.pitch_of_id[generated[position]] >= 0)


def test_the_same_seed_gives_the_same_piece_and_another_seed_another(sampler):
    config = SampleConfig(temperature=1.2, seed=7, max_seconds=10)
    assert sampler.generate(config) == sampler.generate(config)
    other = SampleConfig(temperature=1.2, seed=8, max_seconds=10)
    assert sampler.generate(config) != sampler.generate(other)


def test_key_lock_never_emits_a_pitch_outside_the_scale(sampler):
    scale = scale_pitch_classes("D minor")
    config = SampleConfig(temperature=2.5, key="D minor", variations=4, max_seconds=20, seed=3)
    for piece in sampler.scores(config):
        assert piece.notes and {note.pitch % 12 for note in piece.notes} <= scale


def test_length_limits_in_seconds_and_notes_are_kept(sampler):
    for piece in sampler.scores(SampleConfig(max_seconds=5, bpm=120, seed=1, variations=3)):
        assert 2.5 <= piece.duration_seconds <= 5 + 1e-6  # never stops early: `end` is not sampled
    for ids in sampler.generate(SampleConfig(max_notes=10, max_seconds=600, seed=2)):
        assert sum(VOCABULARY.pitch_of_id[i] >= 0 for i in ids) <= 11


def test_variations_differ_and_each_is_a_readable_midi_file(sampler):
    pieces = sampler.scores(SampleConfig(temperature=1.5, variations=4, seed=5, max_seconds=8))
    assert len({piece.notes for piece in pieces}) == 4
    for piece in pieces:
        assert midi.read(midi.write(piece)).notes


@pytest.mark.parametrize("seed", range(6))
def test_wild_settings_still_give_a_readable_midi_file(sampler, seed):
    config = SampleConfig(temperature=3.0, top_k=3, top_p=0.3, max_seconds=3, seed=seed)
    piece = sampler.scores(config)[0]
    assert midi.read(midi.write(piece)).notes


def test_primer_opens_the_piece(sampler):
    primer = primer_from_score(scale_piece(99), VOCABULARY, notes=6)
    generated = sampler.generate(SampleConfig(seed=1, max_seconds=10), primer)[0]
    assert generated[: len(primer)] == primer and primer[0] == START
    ends = {(note.start, note.pitch): note.end for note in decode(generated, VOCABULARY).notes}
    for note in decode(primer, VOCABULARY).notes:  # the piece may lengthen the last chord by chaining a duration
        assert ends[note.start, note.pitch] >= note.end
    assert END not in primer


def test_a_model_with_openings_starts_each_variation_from_one_and_a_fresh_start_from_none(trained):
    openings = [primer_from_score(scale_piece(number), VOCABULARY, notes=4) for number in (3, 7, 11)]
    sampler = Sampler(trained.model, VOCABULARY, openings)
    config = SampleConfig(seed=4, max_seconds=8, variations=4)
    pieces = sampler.generate(config)
    for variation, piece in enumerate(pieces):  # variation v of seed s: opening s + v, counted round
        opening = openings[(4 + variation) % 3]
        assert piece[: len(opening)] == opening and len(piece) > len(opening)
    assert sampler.generate(config) == pieces  # the same seed, the same pieces
    assert sampler.generate(config, []) == Sampler(trained.model, VOCABULARY).generate(config)  # a fresh start
    primer = primer_from_score(scale_piece(99), VOCABULARY, notes=6)
    assert all(piece[: len(primer)] == primer for piece in sampler.generate(config, primer))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"variations": 50}, "variations"),
        ({"key": "H major"}, "key must be"),
        ({"max_seconds": 10_000}, "max_seconds"),
    ],
)
def test_absurd_sampling_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SampleConfig(**settings)


@pytest.mark.parametrize(
    "notes",
    [
        (Note(0.0, 60, 1.0), Note(19_000.0, 62, 19_001.0)),  # a silence of 19,000 beats after the first note
        (Note(0.0, 60, 19_000.0), Note(0.0, 64, 1.0), Note(1.0, 65, 2.0)),  # a note held for 19,000 beats
        tuple(Note(beat * 200.0, 60, beat * 200.0 + 1) for beat in range(90)),  # 64 notes 200 beats apart
    ],
)
def test_a_primer_is_bounded_in_tokens_whatever_its_silences_and_held_notes(notes):
    vocabulary = Vocabulary()
    primer = primer_from_score(Score(notes), vocabulary, notes=64)
    assert 1 < len(primer) <= MAX_PRIMER_TOKENS
    assert decode(primer, vocabulary).notes[0].pitch == 60


def test_a_primer_encodes_only_the_opening_of_a_long_piece():
    long_piece = Score(tuple(Note(beat / 4, 60 + beat % 12, beat / 4 + 0.25) for beat in range(200_000)))
    primer = primer_from_score(long_piece, Vocabulary(), notes=16)
    assert len(decode(primer, Vocabulary()).notes) == 16


def random_network(vocabulary: Vocabulary, seed: int = 0) -> list[np.ndarray]:
    """Weights of an untrained 1 x 32 network, as the arrays a bundle holds (no TensorFlow needed)."""
    from musicgen.boundary import weight_shapes

    config = ModelConfig(vocabulary_size=len(vocabulary), embedding_size=8, layers=1, units=32)
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, shape).astype(np.float32) for shape in weight_shapes(config).values()]


def test_with_instrument_tokens_drums_count_as_notes_and_parts_keep_their_instruments():
    vocabulary = Vocabulary(TokenConfig(instruments=True))
    sampler = Sampler(random_network(vocabulary), vocabulary)
    pieces = sampler.generate(SampleConfig(max_notes=40, max_seconds=600, seed=3, variations=3, temperature=1.5))
    for ids in pieces:
        names = [vocabulary.names[i] for i in ids]
        notes = [i for i, name in enumerate(names) if name.startswith(("pitch_", "drum_"))]
        assert len(notes) == 41  # the note past the limit ends the piece
        assert all(names[i + 1].startswith("duration_") for i in notes if i + 1 < len(names))
    scores = [decode(ids, vocabulary) for ids in pieces]
    assert any(note.is_drum for score in scores for note in score.notes)
    assert len({note.program for score in scores for note in score.notes if not note.is_drum}) > 1
    assert {note.program for note in sampler.scores(SampleConfig(seed=3), program=6)[0].melodic_notes} == {6}
