"""musicgen.tokens: exact round trips on the grid, over the bundled chorales and random scores."""

import io
import json
from pathlib import Path

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen import midi
from musicgen.score import Note, Score
from musicgen.tokens import MAX_PIECE_TOKENS, TokenConfig, Vocabulary, count_tokens, decode, encode, quantize

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_FILES = sorted(SAMPLES.rglob("*.mid"))
VOCABULARY = Vocabulary()
INSTRUMENTS = Vocabulary(TokenConfig(instruments=True))


def token_names(ids: list[int], vocabulary: Vocabulary = VOCABULARY) -> list[str]:
    return [vocabulary.names[i] for i in ids]


def tokens_per_note(scores: list[Score], vocabulary: Vocabulary = VOCABULARY) -> float:
    """Average token count per note kept, `start` and `end` included."""
    ids = sum(len(encode(score, vocabulary)) for score in scores)
    return ids / sum(len(quantize(score, vocabulary).notes) for score in scores)


# The bundled corpus.


def test_the_bundled_corpus_is_there():
    assert len(SAMPLE_FILES) > 300, "run .venv/bin/python scripts/make_samples.py"


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.relative_to(SAMPLES).as_posix())
def test_every_bundled_file_comes_back_exactly_on_the_grid(path):
    score = midi.read(path)
    assert decode(encode(score)).notes == quantize(score).notes


@pytest.mark.parametrize("path", SAMPLE_FILES[::29], ids=lambda path: path.relative_to(SAMPLES).as_posix())
def test_count_tokens_gives_the_length_of_encode_on_the_chorales(path):
    score = midi.read(path)
    assert count_tokens(score) == len(encode(score))


def test_the_chorales_take_between_two_and_three_tokens_a_note():
    ratio = tokens_per_note([midi.read(path) for path in SAMPLE_FILES])
    print(f"tokens per note on the bundled corpus: {ratio:.2f}")
    assert 2.0 < ratio < 3.0


# Random scores.

configs = st.builds(
    TokenConfig,
    steps_per_beat=st.integers(1, 48),
    max_shift_steps=st.integers(1, 64),
    max_duration_steps=st.integers(1, 64),
    velocity_bins=st.integers(1, 32),
    include_drums=st.booleans(),
    instruments=st.booleans(),
)
notes = st.builds(
    Note,
    start=st.floats(0, 64, allow_nan=False),
    pitch=st.integers(0, 127),
    end=st.floats(0, 80, allow_nan=False),
    velocity=st.integers(1, 127),
    program=st.integers(0, 127),
    is_drum=st.booleans(),
)
scores = st.builds(Score, st.lists(notes, max_size=60).map(tuple))


@settings(max_examples=300, deadline=None)
@given(scores, configs)
def test_any_score_comes_back_exactly_as_quantized(score, config):
    vocabulary = Vocabulary(config)
    assert decode(encode(score, vocabulary), vocabulary).notes == quantize(score, vocabulary).notes


@settings(max_examples=300, deadline=None)
@given(scores, configs)
def test_count_tokens_gives_the_length_of_encode(score, config):
    vocabulary = Vocabulary(config)
    assert count_tokens(score, vocabulary) == len(encode(score, vocabulary))


@settings(max_examples=100, deadline=None)
@given(scores, configs)
def test_quantized_scores_are_on_the_grid_and_stay_put(score, config):
    vocabulary = Vocabulary(config)
    on_grid = quantize(score, vocabulary)
    assert quantize(on_grid, vocabulary) == on_grid
    for note in on_grid.notes:
        step = note.start * config.steps_per_beat
        assert step == pytest.approx(round(step), abs=1e-9) and note.end > note.start
        assert note.velocity in vocabulary.velocity_values
        assert config.instruments or (note.program, note.is_drum) == (0, False)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.integers(-3, len(VOCABULARY) + 3), st.integers()), max_size=300),
    st.integers(0, 127),
)
def test_decode_makes_a_valid_score_of_any_ids(ids, program):
    score = decode(ids, program=program)
    for note in score.notes:
        assert 0 <= note.start < note.end
        assert 0 <= note.pitch <= 127 and 1 <= note.velocity <= 127
        assert (note.program, note.is_drum) == (program, False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-3, len(INSTRUMENTS) + 3), max_size=300), st.one_of(st.none(), st.integers(0, 127)))
def test_decode_with_instruments_makes_a_valid_score_of_any_ids(ids, program):
    for note in decode(ids, INSTRUMENTS, program).notes:
        assert 0 <= note.start < note.end and 0 <= note.pitch <= 127
        assert note.program == 0 if note.is_drum or program is None and note.program == 0 else note.program >= 0
        assert program is None or note.is_drum or note.program == program


def test_decode_takes_numpy_arrays():
    ids = np.array(encode(Score((Note(0.0, 60, 1.0),))), np.int32)
    assert decode(ids).notes == (Note(0.0, 60, 1.0, 72),)


# How music becomes tokens.


def test_a_chord_shares_one_shift_and_one_velocity():
    chords = [Note(0.0, pitch, 1.0, 72) for pitch in (60, 64, 67)] + [Note(1.0, 62, 1.5, 72)]
    assert token_names(encode(Score(tuple(chords)))) == [
        "start",
        "velocity_72",
        "pitch_60",
        "duration_4",
        "pitch_64",
        "duration_4",
        "pitch_67",
        "duration_4",
        "shift_4",
        "pitch_62",
        "duration_2",
        "end",
    ]


def test_loudness_is_repeated_only_when_it_changes():
    notes = (Note(0.0, 60, 1.0, 100), Note(1.0, 62, 2.0, 100), Note(2.0, 64, 3.0, 40))
    names = token_names(encode(Score(notes)))
    assert [name for name in names if name.startswith("velocity")] == ["velocity_104", "velocity_40"]


def test_long_notes_and_long_gaps_chain_tokens():
    vocabulary = Vocabulary(TokenConfig(max_shift_steps=16, max_duration_steps=32))
    notes = (Note(0.0, 60, 20.0, 72), Note(30.0, 62, 31.0, 72))  # 80 steps long, then 120 steps later
    names = token_names(encode(Score(notes), vocabulary), vocabulary)
    assert names == [
        "start",
        "velocity_72",
        "pitch_60",
        *["duration_32", "duration_32", "duration_16"],
        *["shift_16"] * 7,
        "shift_8",
        "pitch_62",
        "duration_4",
        "end",
    ]
    assert decode(encode(Score(notes), vocabulary), vocabulary).notes == notes


def test_a_piece_over_the_token_limit_is_refused_before_it_is_encoded():
    held = Score(tuple(Note(0.0, i % 128, 19_200.0, 72, program=i // 128) for i in range(260)))
    # Each note: a pitch and 19,200 beats * 4 steps / 32 = 2,400 durations; one velocity, start and end.
    assert count_tokens(held) == 260 * 2_401 + 3 > MAX_PIECE_TOKENS
    with pytest.raises(ValueError, match="^this piece would make 624,263 tokens; the limit for one piece is 600,000$"):
        encode(held)


def test_off_grid_times_snap_to_the_nearest_step_and_last_at_least_one():
    notes = (Note(1 / 3, 60, 0.4, 50), Note(0.9, 62, 2.1, 127))
    assert quantize(Score(notes)).notes == (Note(0.25, 60, 0.5, 56), Note(1.0, 62, 2.0, 120))


def test_drums_are_left_out_unless_kept():
    notes = (Note(0.0, 36, 0.25, 100, is_drum=True), Note(0.0, 60, 1.0, 72, program=40))
    assert decode(encode(Score(notes))).notes == (Note(0.0, 60, 1.0, 72),)
    keeping = Vocabulary(TokenConfig(include_drums=True))
    assert decode(encode(Score(notes), keeping), keeping).notes == (  # tokens carry no instrument
        Note(0.0, 36, 0.25, 104),
        Note(0.0, 60, 1.0, 72),
    )


def band_file() -> bytes:
    """A format 1 file of three tracks: violin (program 40) and cello (42) in chords on one beat, and drums."""
    tracks = []
    for channel, program, pitches in ((0, 40, (76, 79)), (1, 42, (48,)), (9, None, (36, 42))):
        track = mido.MidiTrack()
        if program is not None:
            track.append(mido.Message("program_change", channel=channel, program=program))
        for _ in range(4):  # beats
            track += [mido.Message("note_on", channel=channel, note=pitch, velocity=90) for pitch in pitches]
            track += [mido.Message("note_off", channel=channel, note=pitch) for pitch in pitches]
            track[-len(pitches)].time = 480
        tracks.append(track)
    data = io.BytesIO()
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=tracks).save(file=data)
    return data.getvalue()


def test_instruments_and_drums_come_back_exactly_from_a_multi_track_file():
    score = midi.read(band_file())
    assert {(note.program, note.is_drum) for note in score.notes} == {(40, False), (42, False), (0, True)}
    ids = encode(score, INSTRUMENTS)
    back = decode(ids, INSTRUMENTS)
    assert back.notes == quantize(score, INSTRUMENTS).notes
    assert {(note.program, note.is_drum) for note in back.notes} == {(40, False), (42, False), (0, True)}
    assert midi.read(midi.write(back)).notes == back.notes  # and through a MIDI file again
    names = [INSTRUMENTS.names[i] for i in ids]
    assert names.count("program_40") == 4 and names.count("program_42") == 4  # one switch per instrument an onset
    assert names.count("drum_36") == 4 and "pitch_36" not in names
    print(f"tokens per note with instruments on the band file: {len(ids) / len(score.notes):.2f}")


def test_a_piano_piece_needs_no_instrument_token_and_old_vocabularies_keep_their_ids():
    piece = Score((Note(0.0, 60, 1.0), Note(1.0, 64, 2.0)))
    assert encode(piece, INSTRUMENTS) == encode(piece)
    assert INSTRUMENTS.names[: len(VOCABULARY)] == VOCABULARY.names
    assert len(INSTRUMENTS) == len(VOCABULARY) + 256


def test_drums_are_never_transposed_and_an_instrument_can_be_chosen_for_every_other_part():
    ids = encode(midi.read(band_file()), INSTRUMENTS)
    moved = decode(INSTRUMENTS.transpose_table(2)[ids], INSTRUMENTS, program=0)
    assert {note.pitch for note in moved.notes if note.is_drum} == {36, 42}
    assert {note.pitch for note in moved.notes if not note.is_drum} == {50, 78, 81}
    assert {note.program for note in moved.notes} == {0}


def test_decode_skips_what_it_cannot_use():
    ids = {name: i for i, name in enumerate(VOCABULARY.names)}
    sequence = [
        ids["duration_4"],  # no pitch yet: ignored
        ids["pitch_60"],  # no duration: dropped
        ids["pitch_62"],
        len(VOCABULARY) + 10,  # unknown id: skipped, and it ends the note before it
        -1,
        ids["pitch_64"],
        ids["duration_2"],
        ids["end"],
        ids["pitch_65"],  # after the end: cut
        ids["duration_4"],
    ]
    assert decode(sequence).notes == (Note(0.0, 64, 0.5, 72),)


def test_transposing_ids_moves_every_pitch_and_clamps_at_the_edges():
    notes = (Note(0.0, 60, 1.0, 72), Note(1.0, 125, 2.0, 72))
    table = VOCABULARY.transpose_table(5)
    moved = decode(table[encode(Score(notes))])
    assert [note.pitch for note in moved.notes] == [65, 127]


# Settings and the saved vocabulary.


@pytest.mark.parametrize(
    "field, value",
    [
        ("steps_per_beat", 0),
        ("steps_per_beat", 49),
        ("steps_per_beat", 4.0),
        ("max_shift_steps", 0),
        ("max_shift_steps", 257),
        ("max_duration_steps", -1),
        ("velocity_bins", 33),
        ("velocity_bins", "8"),
    ],
)
def test_token_config_names_the_field_and_its_range(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be in range \d+\.\.\d+, got {value!r}$"):
        TokenConfig(**{field: value})


@pytest.mark.parametrize(
    "config",
    [TokenConfig(), TokenConfig(12, 48, 96, 16, True), TokenConfig(1, 1, 1, 1), TokenConfig(instruments=True)],
)
def test_a_vocabulary_survives_json(config):
    vocabulary = Vocabulary(config)
    again = Vocabulary.from_dict(json.loads(json.dumps(vocabulary.to_dict())))
    assert again == vocabulary and again.names == vocabulary.names


def test_an_edited_vocabulary_is_refused():
    data = VOCABULARY.to_dict()
    data["names"][5], data["names"][6] = data["names"][6], data["names"][5]
    with pytest.raises(ValueError, match="it was edited or is damaged"):
        Vocabulary.from_dict(data)


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"config": {}},
        {"names": []},
        {"config": {"steps": 4}, "names": []},
        {"config": 4, "names": []},
        [],
    ],
)
def test_an_incomplete_vocabulary_is_refused(data):
    with pytest.raises(ValueError, match="incomplete or malformed"):
        Vocabulary.from_dict(data)


def test_a_vocabulary_with_impossible_settings_is_refused():
    data = VOCABULARY.to_dict()
    data["config"]["steps_per_beat"] = 0
    with pytest.raises(ValueError, match="steps_per_beat must be in range"):
        Vocabulary.from_dict(data)
