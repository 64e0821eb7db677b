"""musicgen.metrics: known values on hand-made pieces."""

import math
from dataclasses import fields

import numpy as np
import pytest

from musicgen.metrics import (
    Key,
    StyleMeasures,
    corpus_style,
    empty_beat_share,
    histogram_distance,
    key_of,
    measure_style,
    notes_per_beat,
    pitch_class_histogram,
    pitch_range,
    polyphony,
    scale_consistency,
    style_distance,
)
from musicgen.score import Note, Score

C_MAJOR_SCALE = (60, 62, 64, 65, 67, 69, 71)


def melody(pitches) -> list[Note]:
    """One note a beat, without gaps."""
    return [Note(beat, pitch, beat + 1) for beat, pitch in enumerate(pitches)]


def chord(pitches, start: float, end: float) -> list[Note]:
    return [Note(start, pitch, end) for pitch in pitches]


def test_a_c_major_scale():
    style = measure_style(Score(tuple(melody(C_MAJOR_SCALE))))
    white_keys = [1 / 7 if pitch_class in (0, 2, 4, 5, 7, 9, 11) else 0 for pitch_class in range(12)]
    assert style.pitch_class_histogram == pytest.approx(white_keys)
    assert style.pitch_class_entropy == pytest.approx(math.log2(7))
    assert style.scale_consistency == 1.0
    assert style.pitch_range == 11
    assert style.polyphony == 1.0
    assert style.notes_per_beat == 1.0
    assert style.empty_beat_share == 0.0


def test_the_octave_adds_a_semitone_of_range_and_no_new_pitch_class():
    score = Score(tuple(melody((*C_MAJOR_SCALE, 72))))
    assert pitch_range(score) == 12
    assert pitch_class_histogram(score)[0] == pytest.approx(2 / 8)


def test_the_histogram_counts_notes_not_their_lengths():
    score = Score((Note(0, 60, 8), Note(8, 67, 8.5)))
    assert pitch_class_histogram(score)[[0, 7]] == pytest.approx([0.5, 0.5])


def test_a_chromatic_scale_fits_no_scale_well():
    assert scale_consistency(Score(tuple(melody(range(60, 72))))) == pytest.approx(7 / 12)


def test_polyphony_of_chords():
    assert polyphony(Score(tuple(chord((60, 64, 67), 0, 2)))) == 3.0
    chord_then_note = Score((*chord((60, 64, 67), 0, 2), Note(2, 72, 4)))
    assert polyphony(chord_then_note) == 2.0  # 3 pitches for 2 beats, 1 pitch for 2 beats
    silence_between = Score((*chord((60, 64), 0, 1), Note(5, 72, 6)))
    assert polyphony(silence_between) == 1.5  # silence does not count


def test_polyphony_counts_a_doubled_pitch_once():
    assert polyphony(Score((Note(0, 60, 2), Note(1, 60, 3)))) == 1.0


def test_empty_beats():
    score = Score((Note(0, 60, 1), Note(3, 62, 4)))
    assert empty_beat_share(score) == 0.5  # beats 1 and 2 of 0..3
    assert empty_beat_share(Score((Note(0, 60, 1.5), Note(3, 62, 4)))) == 0.25  # the first note reaches beat 1
    assert empty_beat_share(Score((Note(2, 60, 3),))) == pytest.approx(2 / 3)  # a rest at the start counts


def test_note_density_is_per_beat():
    assert notes_per_beat(Score((*chord((60, 64, 67), 0, 2), Note(6, 72, 8)))) == 0.5


def test_drums_are_left_out():
    drums = tuple(Note(i / 2, 36, i / 2 + 0.25, is_drum=True) for i in range(40))
    plain = Score(tuple(melody(C_MAJOR_SCALE)))
    assert measure_style(Score(plain.notes + drums)) == measure_style(plain)


def test_a_piece_without_notes_cannot_be_measured():
    with pytest.raises(ValueError, match="the piece has no notes to measure"):
        measure_style(Score((Note(0, 36, 1, is_drum=True),)))
    with pytest.raises(ValueError, match="none of the pieces has notes to measure"):
        corpus_style([Score()])


def test_histogram_distance():
    c_major = pitch_class_histogram(Score(tuple(melody(C_MAJOR_SCALE))))
    g_major = pitch_class_histogram(Score(tuple(melody(p + 7 for p in C_MAJOR_SCALE))))
    black_keys = pitch_class_histogram(Score(tuple(melody((61, 63, 66, 68, 70)))))
    assert histogram_distance(c_major, c_major) == 0.0
    assert histogram_distance(c_major, black_keys) == pytest.approx(1.0)
    assert 0 < histogram_distance(c_major, g_major) < 0.2  # one pitch class of seven differs
    assert histogram_distance(c_major, g_major) == pytest.approx(histogram_distance(g_major, c_major))
    with pytest.raises(ValueError, match="12 non-negative values"):
        histogram_distance(c_major, np.zeros(12))


TUNES = {
    "major": [60, 64, 67, 72, 71, 67, 65, 64, 62, 60],  # ends on a long tonic below
    "minor": [57, 60, 64, 62, 60, 59, 56, 57, 59, 57],  # A minor with its leading note G#
}


@pytest.mark.parametrize("semitones", range(12))
@pytest.mark.parametrize("mode", ["major", "minor"])
def test_key_of_follows_transposition(mode, semitones):
    pitches = [p + semitones for p in TUNES[mode]]
    notes = melody(pitches[:-1]) + [Note(len(pitches) - 1, pitches[-1], len(pitches) + 3)]
    tonic = (0 if mode == "major" else 9) + semitones
    assert key_of(Score(tuple(notes))) == Key(tonic % 12, mode)


def test_key_names_and_scales():
    assert Key(6, "minor").name == "F# minor"
    assert Key(0, "major").pitch_classes == (0, 2, 4, 5, 7, 9, 11)
    assert Key(9, "minor").pitch_classes == (9, 11, 0, 2, 4, 5, 7)


def test_corpus_style_averages_and_pools_the_histogram():
    one_c = Score((Note(0, 60, 1),))
    three_gs = Score(tuple(chord((55, 67, 79), 0, 2)))
    style = corpus_style([one_c, three_gs, Score()])  # the empty piece is left out
    assert style.pitch_class_histogram[0] == 0.25 and style.pitch_class_histogram[7] == 0.75
    assert style.pitch_range == 12  # mean of 0 and 24
    assert style.polyphony == 2.0  # mean of 1 and 3
    assert style.notes_per_beat == 1.25  # mean of 1 and 1.5


def test_style_distance_is_per_measure():
    first = measure_style(Score(tuple(melody(C_MAJOR_SCALE))))
    second = measure_style(Score(tuple(chord((60, 64, 67), 0, 2))))
    assert set(style_distance(first, first)) == {field.name for field in fields(StyleMeasures)}
    assert all(value == 0 for value in style_distance(first, first).values())
    distances = style_distance(first, second)
    assert distances["polyphony"] == 2.0
    assert distances["pitch_range"] == 4.0
    assert 0 < distances["pitch_class_histogram"] < 1
