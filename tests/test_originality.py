"""musicgen.originality: copied passages are found exactly, whatever their key, and nothing else is."""

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen.originality import (
    COPY_THRESHOLD_NOTES,
    PHRASE_NOTES,
    index_corpus,
    load_index,
    measure_originality,
    save_index,
    score_to_steps,
    suffix_array,
)
from musicgen.score import Note, Score

STEPS_PER_BEAT = 4
CORPUS_DURATIONS = (1, 2, 4)  # grid steps; the filler of test pieces uses 3, so it never matches


def random_score(rng: random.Random, note_count: int, durations=CORPUS_DURATIONS) -> Score:
    """Chords of 1..3 distinct random pitches, one after the other."""
    notes, step = [], 0
    while len(notes) < note_count:
        duration = rng.choice(durations)
        for pitch in rng.sample(range(50, 70), rng.randint(1, 3)):
            notes.append(Note(step / STEPS_PER_BEAT, pitch, (step + duration) / STEPS_PER_BEAT))
        step += duration
    return Score(tuple(notes[:note_count]))


def filler(rng: random.Random, note_count: int, first_beat: float) -> list[Note]:
    """A melody of 3-step notes: no step of it, or into it, or out of it, occurs in the corpus."""
    return [Note(first_beat + 0.75 * i, rng.randrange(40, 90), first_beat + 0.75 * (i + 1)) for i in range(note_count)]


def moved(notes, beats: float, semitones: int) -> list[Note]:
    return [Note(n.start + beats, n.pitch + semitones, n.end + beats) for n in notes]


@pytest.fixture(scope="module")
def corpus() -> list[Score]:
    rng = random.Random(7)
    return [random_score(rng, rng.randint(40, 120)) for _ in range(30)]


@pytest.fixture(scope="module")
def index(corpus):
    return index_corpus(corpus, STEPS_PER_BEAT)


def piece_with_planted(corpus, source: int, first: int, length: int, semitones: int = 5) -> tuple[Score, float]:
    """Filler, then `length` notes of corpus piece `source` from note `first` (transposed), then filler."""
    rng = random.Random(source * 1000 + first)
    before = filler(rng, 40, 0.0)
    copied = corpus[source].notes[first : first + length]
    planted = moved(copied, before[-1].end + 2 - copied[0].start, semitones)
    after = filler(rng, 40, max(n.end for n in planted) + 2)
    return Score((*before, *planted, *after)), planted[0].start


@pytest.mark.parametrize("source, first, semitones", [(0, 0, 5), (3, 17, -7), (12, 30, 0), (29, 5, 12)])
def test_a_planted_transposed_passage_is_found_exactly_with_its_source(corpus, index, source, first, semitones):
    piece, planted_at = piece_with_planted(corpus, source, first, 10, semitones)
    result = measure_originality(piece, index)
    assert result.longest_copied_notes == 10
    assert result.longest_copy_source == source
    assert result.longest_copy_beat == planted_at
    assert result.longest_copy_source_beat == corpus[source].notes[first].start
    assert not result.copies_long_passages


def test_phrases_inside_a_planted_passage_are_counted(corpus, index):
    piece, _ = piece_with_planted(corpus, 4, 10, 10)
    result = measure_originality(piece, index)
    assert result.note_count == 90
    assert result.phrase_count == 90 - PHRASE_NOTES + 1
    assert result.copied_ngram_share == pytest.approx(3 / result.phrase_count)  # 10 notes hold 3 phrases of 8


def test_a_piece_of_notes_absent_from_the_corpus_borrows_nothing(index):
    result = measure_originality(Score(tuple(filler(random.Random(1), 60, 0.0))), index)
    assert (result.longest_copied_notes, result.copied_ngram_share) == (0, 0.0)
    assert result.longest_copy_source is None and result.longest_copy_beat is None
    assert result.plain_summary().startswith("Nothing is borrowed from the training music")
    assert "0% of its 8-note phrases also occur in the training music" in result.plain_summary()


def test_a_whole_corpus_piece_in_another_key_is_all_copied(corpus, index):
    piece = Score(tuple(moved(corpus[5].notes, 3.0, -2)))
    result = measure_originality(piece, index)
    assert result.longest_copied_notes == len(piece.notes)
    assert result.copied_ngram_share == 1.0
    assert result.copies_long_passages
    assert result.plain_summary() == (
        f"The longest passage borrowed from the training music: {len(piece.notes)} notes; "
        "100% of its 8-note phrases also occur in the training music. "
        "That is long enough to sound like a copy."
    )


def test_the_flag_starts_at_the_threshold(corpus, index):
    long_source = max(range(len(corpus)), key=lambda i: len(corpus[i].notes))
    for length, flagged in ((COPY_THRESHOLD_NOTES - 1, False), (COPY_THRESHOLD_NOTES, True)):
        piece, _ = piece_with_planted(corpus, long_source, 0, length)
        result = measure_originality(piece, index)
        assert (result.longest_copied_notes, result.copies_long_passages) == (length, flagged)


def test_drums_and_small_timing_errors_do_not_matter(corpus, index):
    piece, _ = piece_with_planted(corpus, 2, 3, 10)
    drums = [Note(i / 2, 36, i / 2 + 0.25, is_drum=True) for i in range(100)]
    played = [Note(n.start + 0.02, n.pitch, n.end - 0.03, n.velocity, 40) for n in piece.notes]
    result = measure_originality(Score((*played, *drums)), index)
    assert result.longest_copied_notes == 10
    assert result.note_count == len(piece.notes)


def test_short_pieces_and_empty_corpora():
    assert measure_originality(Score(), index_corpus([])).longest_copied_notes == 0
    one_note = Score((Note(0, 60, 1),))
    result = measure_originality(one_note, index_corpus([one_note]))
    assert (result.longest_copied_notes, result.phrase_count, result.note_count) == (0, 0, 1)
    assert "too short to compare 8-note phrases" in result.plain_summary()


def test_an_index_saved_as_arrays_loads_back_the_same(corpus, index, tmp_path):
    save_index(index, tmp_path / "index.npz")
    loaded = load_index(tmp_path / "index.npz")
    assert (loaded.text, loaded.symbols, loaded.piece_offsets) == (index.text, index.symbols, index.piece_offsets)
    np.testing.assert_array_equal(loaded.suffix_array, index.suffix_array)
    np.testing.assert_array_equal(loaded.step_beats, index.step_beats)
    assert measure_originality(corpus[3], loaded) == measure_originality(corpus[3], index)


def test_steps_per_beat_is_checked():
    with pytest.raises(ValueError, match=r"steps_per_beat must be in range 1..48, got 0"):
        index_corpus([], steps_per_beat=0)


# Against a naive search, on tiny alphabets where almost everything repeats.


def naive_match_lengths(piece_steps: list, corpus_steps: list[list]) -> list[int]:
    """For each piece position, the longest run of steps from there found in one corpus piece."""
    lengths = []
    for start in range(len(piece_steps)):
        best = 0
        for steps in corpus_steps:
            for position in range(len(steps)):
                length = 0
                while (
                    start + length < len(piece_steps)
                    and position + length < len(steps)
                    and piece_steps[start + length] == steps[position + length]
                ):
                    length += 1
                best = max(best, length)
        lengths.append(best)
    return lengths


def score_from_events(events: list[tuple[int, int, int]]) -> Score:
    """Notes from (onset gap, pitch, length) triples, gaps and lengths in grid steps."""
    notes, step = [], 0
    for gap, pitch, length in events:
        step += gap
        notes.append(Note(step / STEPS_PER_BEAT, pitch, (step + length) / STEPS_PER_BEAT))
    return Score(tuple(notes))


tiny_scores = st.lists(st.tuples(st.integers(0, 1), st.sampled_from((60, 62)), st.integers(1, 2)), max_size=25).map(
    score_from_events
)


@settings(max_examples=200, deadline=None)
@given(st.lists(tiny_scores, max_size=4), tiny_scores)
def test_indexed_search_agrees_with_a_naive_one(corpus, piece):
    lengths = naive_match_lengths(score_to_steps(piece)[0], [score_to_steps(score)[0] for score in corpus])
    result = measure_originality(piece, index_corpus(corpus))
    longest = max(lengths, default=0)
    assert result.longest_copied_notes == (longest + 1 if longest else 0)
    phrases = lengths[: result.phrase_count]
    expected_share = sum(length >= PHRASE_NOTES - 1 for length in phrases) / len(phrases) if phrases else 0.0
    assert result.copied_ngram_share == pytest.approx(expected_share)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40))
def test_the_suffix_array_sorts_every_suffix(codes):
    order = suffix_array(np.array(codes, np.int64))
    assert order.tolist() == sorted(range(len(codes)), key=lambda start: codes[start:])
