"""musicgen.corpus: many files at once, each reported, the bad ones skipped, the rest used."""

import io
import struct
import warnings

import mido
import numpy as np
import pytest

from musicgen.corpus import (
    MAX_CORPUS_TOKENS,
    ONLY_DRUMS,
    FileReport,
    UploadLimits,
    corpus_to_ids,
    load_corpus,
    load_folder,
    load_paths,
)
from musicgen.tokens import MAX_PIECE_TOKENS, TokenConfig, Vocabulary, encode

DRUM_CHANNEL = 9


def notes_one_a_beat(pitches: list[int], channel: int = 0, program: int = 0) -> list[mido.Message]:
    """Messages of one note per beat at 480 ticks per beat, after a program change."""
    messages = [mido.Message("program_change", channel=channel, program=program)]
    for pitch in pitches:
        messages.append(mido.Message("note_on", channel=channel, note=pitch, velocity=80))
        messages.append(mido.Message("note_off", channel=channel, note=pitch, time=480))
    return messages


def midi_bytes(*tracks: list[mido.Message]) -> bytes:
    """A format-1 MIDI file at 120 bpm, one list of messages per track."""
    midi_file = mido.MidiFile(type=1, ticks_per_beat=480)
    midi_file.tracks += [mido.MidiTrack(messages) for messages in tracks]
    buffer = io.BytesIO()
    midi_file.save(file=buffer)
    return buffer.getvalue()


def tune(number: int) -> bytes:
    """A four-note piano tune, different for every number."""
    return midi_bytes(notes_one_a_beat([48 + number, 52 + number, 55 + number, 60 + number]))


def drum_loop() -> bytes:
    return midi_bytes(notes_one_a_beat([36, 42, 38, 42], channel=DRUM_CHANNEL))


def with_too_loud_note(pitch: int) -> bytes:
    """A file whose one note has velocity 200, which midi.read clips to 127 with a MidiWarning."""
    events = bytes([0x00, 0x90, pitch, 0xC8, 0x83, 0x60, 0x80, pitch, 0x40, 0x00, 0xFF, 0x2F, 0x00])
    return b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(events)) + events


def held_notes(count: int, beats: int) -> bytes:
    """`count` notes struck together and held for `beats` beats, at 600 bpm (20,000 beats last 2,000 s).

    With the default vocabulary they make 3 + count * (1 + beats / 8) tokens: start, end, one
    velocity, and per note a pitch and a duration token for every 32 sixteenths.
    """
    keys = [(channel, pitch) for channel in range(3) for pitch in range(128)][:count]
    strikes = [mido.Message("note_on", channel=channel, note=pitch, velocity=72) for channel, pitch in keys]
    releases = [mido.Message("note_off", channel=channel, note=pitch) for channel, pitch in keys]
    releases[0].time = beats * 480
    return midi_bytes([mido.MetaMessage("set_tempo", tempo=100_000), *strikes, *releases])


TWENTY_FILES = [(f"tune_{number:02}.mid", tune(number)) for number in range(19)]
TWENTY_FILES.insert(7, ("broken.mid", b"these are not the bytes of a MIDI file"))


# One bad file in twenty.


def test_one_bad_file_in_twenty_is_reported_and_the_other_nineteen_are_used():
    corpus = load_corpus(TWENTY_FILES)
    assert corpus.names == tuple(name for name, _ in TWENTY_FILES if name != "broken.mid")
    assert len(corpus.scores) == 19 and len(corpus.reports) == 20
    skipped = [report for report in corpus.reports if report.error is not None]
    assert [report.summary for report in skipped] == ["broken.mid: skipped — this file is not a MIDI file"]
    assert corpus.reports[7] == skipped[0]


def test_reports_say_in_one_line_what_each_file_gave():
    corpus = load_corpus(TWENTY_FILES)
    assert corpus.reports[0].summary == "tune_00.mid: 4 notes, 1 track, piano, 0:02"
    assert corpus.summary == "19 of 20 files used: 76 notes, 0:38 of music"


def test_a_band_lists_its_instrument_families_and_the_drum_notes_left_out():
    band = midi_bytes(
        notes_one_a_beat([60, 62, 64, 65]),
        notes_one_a_beat([72, 74, 76, 77], channel=1, program=40),  # violin
        notes_one_a_beat([36, 42, 38, 42], channel=DRUM_CHANNEL),
    )
    report = load_corpus([("band.mid", band)]).reports[0]
    assert report == FileReport("band.mid", 8, 3, ("piano", "strings"), 4, 2.0)
    assert report.summary == "band.mid: 8 notes, 3 tracks, piano, strings, 0:02, 4 drum notes left out"


def test_a_file_of_only_drums_is_skipped_with_the_reason():
    corpus = load_corpus([("tune.mid", tune(0)), ("drums.mid", drum_loop())])
    assert corpus.names == ("tune.mid",)
    assert corpus.reports[1].drum_notes_left_out == 4
    assert corpus.reports[1].summary == (
        "drums.mid: skipped — it has only drums, and the model learns melody and harmony, not drums"
    )


def test_the_same_music_twice_is_used_once():
    corpus = load_corpus([("a.mid", tune(1)), ("copy of a.mid", tune(1))])
    assert corpus.names == ("a.mid",)
    assert corpus.reports[1].error == "it holds the same music as a.mid"
    assert corpus.fingerprint == load_corpus([("a.mid", tune(1))]).fingerprint


def test_nothing_usable_gives_an_empty_corpus_with_every_reason():
    corpus = load_corpus([("empty.mid", b""), ("drums.mid", drum_loop())])
    assert (corpus.names, corpus.scores) == ((), ())
    assert [report.error for report in corpus.reports] == ["this file is empty", ONLY_DRUMS]


# Token limits.


def test_a_file_over_the_token_limit_of_a_piece_is_skipped_with_the_reason():
    corpus = load_corpus([("tune.mid", tune(0)), ("held.mid", held_notes(260, 19_200))])
    assert corpus.names == ("tune.mid",)
    assert 3 + 260 * 2_401 > MAX_PIECE_TOKENS
    assert corpus.reports[1].summary == (
        "held.mid: skipped — it would make 624,263 tokens, more than the 600,000 one piece may have "
        "(long silences and long-held notes take many)"
    )


def test_the_token_limit_of_a_piece_is_counted_with_the_vocabulary_given():
    files = [("tune.mid", tune(0)), ("held.mid", held_notes(160, 19_200))]  # 384,163 tokens at 4 steps a beat
    finer = Vocabulary(TokenConfig(steps_per_beat=8))  # 768,163 at 8
    assert load_corpus(files).names == ("tune.mid", "held.mid")
    assert load_corpus(files, finer).reports[1].error.startswith("it would make 768,163 tokens")
    with pytest.raises(ValueError, match="^held.mid: it would make 768,163 tokens, .*; leave it out or shorten it$"):
        corpus_to_ids(load_corpus(files), finer)


def test_music_over_the_token_limit_of_a_training_is_refused_before_its_tokens_are_made():
    files = [(f"held_{n}.mid", held_notes(229, 19_200 - 8 * n)) for n in range(6)]  # 3 + 229 * (2,401 - n) tokens
    corpus = load_corpus(files)
    assert len(corpus.names) == 6 and 3_295_557 > MAX_CORPUS_TOKENS
    message = "^all your music together would make 3,295,557 tokens, more than the 3,000,000 one training may use"
    with pytest.raises(ValueError, match=message + ": upload fewer or shorter files$"):
        corpus_to_ids(corpus, Vocabulary())


# Warnings from midi.read.


def test_repairs_go_into_the_report_of_each_file_and_are_not_printed():
    files = [("loud.mid", with_too_loud_note(60)), ("louder.mid", with_too_loud_note(62))]
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        corpus = load_corpus(files)
    assert escaped == []
    repair = "some values in this file were above 127 and were clipped to 127"
    assert [report.warnings for report in corpus.reports] == [(repair,), (repair,)]
    assert corpus.reports[0].summary == f"loud.mid: 1 note, 1 track, piano, 0:00 ({repair})"
    assert corpus.names == ("loud.mid", "louder.mid")


# The fingerprint.


def test_the_fingerprint_ignores_order_and_names():
    reordered = [(f"renamed_{i}.mid", data) for i, (_, data) in enumerate(reversed(TWENTY_FILES))]
    assert load_corpus(reordered).fingerprint == load_corpus(TWENTY_FILES).fingerprint


def test_the_fingerprint_changes_with_the_music():
    changed = [("tune_00.mid", tune(40)) if name == "tune_00.mid" else (name, data) for name, data in TWENTY_FILES]
    fewer = TWENTY_FILES[1:]
    fingerprints = {load_corpus(files).fingerprint for files in (TWENTY_FILES, changed, fewer)}
    assert len(fingerprints) == 3 and all(len(fingerprint) == 64 for fingerprint in fingerprints)


def test_skipped_files_do_not_change_the_fingerprint():
    used_only = [(name, data) for name, data in TWENTY_FILES if name != "broken.mid"]
    assert load_corpus(used_only).fingerprint == load_corpus(TWENTY_FILES).fingerprint


# Files on disk.


def test_files_on_disk_give_the_same_corpus_as_their_bytes(tmp_path):
    for name, data in TWENTY_FILES:
        (tmp_path / name).write_bytes(data)
    paths = sorted(tmp_path.iterdir())
    from_disk, in_memory = load_paths(paths), load_corpus(sorted(TWENTY_FILES))
    assert from_disk.reports == in_memory.reports
    assert (from_disk.names, from_disk.scores) == (in_memory.names, in_memory.scores)
    assert from_disk.fingerprint == in_memory.fingerprint


def test_a_missing_file_is_reported(tmp_path):
    corpus = load_paths([tmp_path / "gone.mid"])
    assert corpus.reports[0].summary == f"gone.mid: skipped — file not found: {tmp_path / 'gone.mid'}"


def test_a_folder_is_searched_for_midi_files_in_its_subfolders(tmp_path):
    (tmp_path / "bach").mkdir()
    (tmp_path / "bach" / "chorale.MID").write_bytes(tune(1))
    (tmp_path / "song.midi").write_bytes(tune(2))
    (tmp_path / "notes.txt").write_text("not music")
    corpus = load_folder(tmp_path)
    assert corpus.names == ("bach/chorale.MID", "song.midi")


def test_a_folder_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        load_folder(tmp_path / "nowhere")


# Token ids.


def test_corpus_to_ids_gives_the_int32_tokens_of_every_used_score():
    corpus = load_corpus(TWENTY_FILES)
    sequences = corpus_to_ids(corpus, Vocabulary())
    assert len(sequences) == 19 and all(ids.dtype == np.int32 for ids in sequences)
    assert [ids.tolist() for ids in sequences] == [encode(score, Vocabulary()) for score in corpus.scores]


def test_an_upload_reads_at_most_its_file_limit_and_reports_the_rest_unread():
    files = [(f"tune{number}.mid", tune(number)) for number in range(5)] + [("broken.mid", b"never read")]
    corpus = load_corpus(files, limits=UploadLimits(max_files=3, max_notes=10**6))
    assert corpus.names == ("tune0.mid", "tune1.mid", "tune2.mid")
    assert [report.error for report in corpus.reports[3:]] == ["only the first 3 files of an upload are used"] * 3


def test_an_upload_stops_reading_once_its_files_hold_the_note_limit():
    files = [(f"tune{number}.mid", tune(number)) for number in range(4)]
    notes_each = len(load_corpus(files[:1]).scores[0].notes)
    corpus = load_corpus(files, limits=UploadLimits(max_files=100, max_notes=2 * notes_each))
    assert corpus.names == ("tune0.mid", "tune1.mid")
    assert "already hold" in corpus.reports[2].error
