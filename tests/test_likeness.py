"""musicgen.likeness: a model's pieces beside the music it was taught, in sentences."""

from musicgen.likeness import measure_likeness
from musicgen.metrics import corpus_style
from musicgen.score import Note, Score


def chords(pitches: tuple[int, ...], beats: int = 16) -> Score:
    return Score(tuple(Note(float(beat), pitch, beat + 1.0) for beat in range(beats) for pitch in pitches))


def test_pieces_like_the_taught_music_are_said_to_be_closer_to_it_than_to_the_base():
    taught, base = [chords((60, 64, 67))], corpus_style([chords((61, 66))])
    likeness = measure_likeness([chords((60, 64, 67), 8)], taught, base, "Bach chorales")
    lines = likeness.sentences()
    assert lines[0] == "Notes sounding at once: 3.0 (your music 3.0, Bach chorales 2.0)."
    assert lines[2] == "Pitch range: 7.0 semitones (your music 7.0, Bach chorales 5.0)."
    assert lines[-1].startswith("Pitch classes: closer to your music (difference 0.000 from yours")
    unlike = measure_likeness([chords((61, 66))], taught, base, "Bach chorales").sentences()[-1]
    assert unlike.startswith("Pitch classes: closer to Bach chorales")


def test_without_a_base_the_pitch_classes_are_said_close_or_not():
    assert "very close to your music" in measure_likeness([chords((60, 64))], [chords((60, 64))]).sentences()[-1]
    assert "not yet close" in measure_likeness([chords((61, 66))], [chords((60, 64))]).sentences()[-1]
