"""musicgen.midi: reading every shape of MIDI file, refusing bad ones plainly, and round trips."""

import io
import random
import struct
import warnings

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen import midi
from musicgen.midi import MidiError, MidiWarning, read, read_with_repairs, write
from musicgen.score import Note, Score, Tempo

# Building files in memory.


def on(pitch: int, time: int = 0, velocity: int = 64, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=pitch, velocity=velocity, time=time, channel=channel)


def off(pitch: int, time: int = 0, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=pitch, time=time, channel=channel)


def program(number: int, channel: int = 0, time: int = 0) -> mido.Message:
    return mido.Message("program_change", program=number, channel=channel, time=time)


def tempo(microseconds_per_beat: int, time: int = 0) -> mido.MetaMessage:
    return mido.MetaMessage("set_tempo", tempo=microseconds_per_beat, time=time)


def midi_bytes(*tracks: list, file_type: int = 1, ticks_per_beat: int = 480) -> bytes:
    """A MIDI file saved by mido, one list of messages per track."""
    midi_file = mido.MidiFile(type=file_type, ticks_per_beat=ticks_per_beat)
    midi_file.tracks += [mido.MidiTrack(messages) for messages in tracks]
    buffer = io.BytesIO()
    midi_file.save(file=buffer)
    return buffer.getvalue()


def raw_file(file_format: int, division: int, *tracks: bytes, track_count: int | None = None) -> bytes:
    """A MIDI file written byte by byte: a header and MTrk chunks of the given event bytes."""
    count = len(tracks) if track_count is None else track_count
    header = b"MThd" + struct.pack(">IHHH", 6, file_format, count, division)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(track)) + track for track in tracks)


END_OF_TRACK = bytes.fromhex("00 ff 2f 00")
ONE_NOTE = bytes.fromhex("00 90 3c 40 83 60 80 3c 40") + END_OF_TRACK  # middle C for one beat at 480


def riff_wrapped(smf: bytes) -> bytes:
    """An RMID file: the MIDI file in the `data` chunk of a RIFF container, after another chunk."""
    info = b"INFO" + struct.pack("<I", 3) + b"abc\x00"  # odd size, padded to even
    body = b"RMID" + info + b"data" + struct.pack("<I", len(smf)) + smf
    return b"RIFF" + struct.pack("<I", len(body)) + body


# The shapes of MIDI files.


def test_format_0_reads_every_channel_of_its_one_track():
    data = midi_bytes(
        [program(40, channel=1), on(60), on(64, channel=1), off(60, 480), off(64, 480, channel=1)],
        file_type=0,
    )
    assert read(data).notes == (Note(0.0, 60, 1.0, 64), Note(0.0, 64, 2.0, 64, program=40))


def test_format_1_reads_tracks_together_with_programs_set_anywhere():
    conductor = [mido.MetaMessage("time_signature", numerator=3, denominator=4), program(5, channel=1)]
    piano = [on(60), off(60, 480), on(62), off(62, 480)]
    strings = [program(48, channel=1, time=480), on(67, channel=1), off(67, 960, channel=1)]
    score = read(midi_bytes(conductor, piano, strings))
    assert score.notes == (Note(0.0, 60, 1.0, 64), Note(1.0, 62, 2.0, 64), Note(1.0, 67, 3.0, 64, 48))
    assert score.time_signature == (3, 4)
    assert score.ticks_per_beat == 480


def test_format_2_plays_tracks_one_after_another():
    first = [tempo(1_000_000), on(60), off(60, 480), mido.MetaMessage("end_of_track", time=480)]
    second = [on(62), off(62, 240)]
    score = read(midi_bytes(first, second, file_type=2))
    assert score.notes == (Note(0.0, 60, 1.0, 64), Note(2.0, 62, 2.5, 64))
    assert score.tempos == (Tempo(0.0, 1_000_000), Tempo(2.0, 500_000))  # each track starts at 120 bpm
    assert score.beat_to_seconds(2.0) == pytest.approx(2.0)


def test_running_status_is_understood():
    events = "00 90 3c 40  83 60 3c 00  00 3e 50  83 60 3e 00"  # note_on status given once
    data = raw_file(0, 480, bytes.fromhex(events) + END_OF_TRACK)
    assert read(data).notes == (Note(0.0, 60, 1.0, 64), Note(1.0, 62, 2.0, 80))


def test_note_on_with_velocity_0_ends_the_note():
    data = midi_bytes([on(60, velocity=90), on(60, 240, velocity=0)])
    assert read(data).notes == (Note(0.0, 60, 0.5, 90),)


def test_a_pitch_struck_again_ends_the_earlier_note_at_the_new_onset():
    data = midi_bytes([on(60, velocity=50), on(60, 240, velocity=70), off(60, 240), off(60, 240)])
    assert read(data).notes == (Note(0.0, 60, 0.5, 50), Note(0.5, 60, 1.0, 70))


def test_a_pitch_struck_twice_in_one_tick_keeps_the_later_note():
    data = midi_bytes([on(60, velocity=50), on(60, velocity=70), off(60, 480)])
    assert read(data).notes == (Note(0.0, 60, 1.0, 70),)


def test_a_note_off_in_the_tick_of_its_onset_belongs_to_the_earlier_note():
    data = midi_bytes([on(60), on(60, 480), off(60), off(60, 480)])  # sloppy order at tick 480
    assert read(data).notes == (Note(0.0, 60, 1.0, 64), Note(1.0, 60, 2.0, 64))


def test_a_note_never_released_ends_with_its_track():
    data = midi_bytes([on(60), on(62, 480), off(62, 240), mido.MetaMessage("end_of_track", time=240)])
    assert read(data).notes == (Note(0.0, 60, 2.0, 64), Note(1.0, 62, 1.5, 64))


def test_a_note_never_released_at_the_very_end_lasts_a_sixteenth():
    data = midi_bytes([on(62), off(62, 480), on(60)])
    assert read(data).notes == (Note(0.0, 62, 1.0, 64), Note(1.0, 60, 1.25, 64))


def test_note_offs_with_no_note_on_are_ignored():
    data = midi_bytes([off(61), on(60), off(64, 100), off(60, 380), off(60, 480)])
    assert read(data).notes == (Note(0.0, 60, 1.0, 64),)


def test_notes_are_matched_per_track():
    data = midi_bytes([on(60), off(60, 960)], [on(60, 480), off(60, 960)])
    assert read(data).notes == (Note(0.0, 60, 2.0, 64), Note(1.0, 60, 3.0, 64))


def test_several_tempo_changes_in_any_track_give_the_seconds_mido_gives():
    conductor = [tempo(400_000), tempo(400_000, 240), tempo(750_000, 720)]
    notes = [on(60, 100), off(60, 900), on(62, 50), off(62, 1000), on(64, 3000), off(64, 10)]
    late_tempo = [tempo(300_000, 2000), tempo(1_200_000, 1500)]
    data = midi_bytes(conductor, notes, late_tempo, ticks_per_beat=384)
    score = read(data)
    changes = [(0, 400_000), (960, 750_000), (2000, 300_000), (3500, 1_200_000)]  # repeated 400_000 dropped
    assert score.tempos == tuple(Tempo(tick / 384, microseconds) for tick, microseconds in changes)
    expected = _seconds_by_mido(mido.MidiFile(file=io.BytesIO(data)))
    found = [(score.beat_to_seconds(n.start), score.beat_to_seconds(n.end)) for n in score.notes]
    assert [seconds for pair in found for seconds in pair] == pytest.approx(expected)


def _seconds_by_mido(midi_file: mido.MidiFile) -> list[float]:
    """Start and end seconds of each note, in note order, adding up mido.tick2second."""
    seconds, current_tempo, starts, spans = 0.0, 500_000, {}, []
    for message in mido.merge_tracks(midi_file.tracks):
        seconds += mido.tick2second(message.time, midi_file.ticks_per_beat, current_tempo)
        if message.type == "set_tempo":
            current_tempo = message.tempo
        elif message.type == "note_on":
            starts[message.note] = seconds
        elif message.type == "note_off":
            spans.append((starts.pop(message.note), seconds))
    return [seconds for pair in sorted(spans) for seconds in pair]


@pytest.mark.parametrize(("frames_per_second", "exact_rate"), [(24, 24), (25, 25), (29, 30000 / 1001), (30, 30)])
def test_smpte_timing_is_read_at_120_bpm_with_true_seconds(frames_per_second, exact_rate):
    division = ((256 - frames_per_second) << 8) | 40  # 40 ticks per frame
    signed_division = struct.unpack(">h", struct.pack(">H", division))[0]
    data = midi_bytes([tempo(900_000), on(60, 2000), off(60, 1000)], ticks_per_beat=signed_division)
    assert mido.MidiFile(file=io.BytesIO(data)).ticks_per_beat < 0  # how mido shows SMPTE timing
    score = read(data)
    ticks_per_second = exact_rate * 40
    (note,) = score.notes
    assert score.beat_to_seconds(note.start) == pytest.approx(2000 / ticks_per_second)
    assert score.beat_to_seconds(note.end) == pytest.approx(3000 / ticks_per_second)
    assert (score.tempos, score.ticks_per_beat) == ((Tempo(0.0, 500_000),), 480)


def test_drums_on_channel_10_are_kept_and_flagged():
    data = midi_bytes([on(36, channel=9), on(60), off(36, 240, channel=9), off(60, 240)])
    assert read(data).notes == (Note(0.0, 36, 0.5, 64, is_drum=True), Note(0.0, 60, 1.0, 64))


def test_unknown_chunks_between_tracks_are_skipped():
    alien = b"XFIH" + struct.pack(">I", 3) + b"xyz"
    data = raw_file(1, 480, ONE_NOTE)
    assert read(data[:14] + alien + data[14:]).notes == (Note(0.0, 60, 1.0, 64),)


def test_a_path_is_read_like_bytes(tmp_path):
    path = tmp_path / "song.mid"
    path.write_bytes(raw_file(0, 480, ONE_NOTE))
    assert read(path) == read(str(path)) == read(path.read_bytes())


# Files that cannot be read.


@pytest.mark.parametrize(
    "tracks",
    [[], [[mido.MetaMessage("track_name", name="empty"), tempo(600_000)]], [[program(3), off(60, 10)]]],
)
def test_a_file_without_notes_is_refused(tracks):
    with pytest.raises(MidiError, match="^this file has no notes$"):
        read(midi_bytes(*tracks))


def test_an_empty_file_is_refused():
    with pytest.raises(MidiError, match="^this file is empty$"):
        read(b"")


def test_random_bytes_are_not_a_midi_file():
    with pytest.raises(MidiError, match="^this file is not a MIDI file$"):
        read(random.Random(0).randbytes(1000))


def test_a_text_file_renamed_mid_is_not_a_midi_file(tmp_path):
    path = tmp_path / "notes.mid"
    path.write_text("C D E F G A B\n")
    with pytest.raises(MidiError, match="^this file is not a MIDI file$"):
        read(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(MidiError, match="^file not found: .*missing.mid$"):
        read(tmp_path / "missing.mid")


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(MidiError, match="^this is a folder, not a file"):
        read(tmp_path)


def test_a_header_claiming_more_tracks_than_present_is_cut_off():
    data = raw_file(1, 480, ONE_NOTE, track_count=3)
    with pytest.raises(MidiError, match=f"^this file is cut off after {len(data)} bytes$"):
        read(data)


@pytest.mark.parametrize("kept", [10, 13, 20, len(raw_file(0, 480, ONE_NOTE)) - 1])
def test_a_truncated_file_is_cut_off(kept):
    with pytest.raises(MidiError, match=f"^this file is cut off after {kept} bytes$"):
        read(raw_file(0, 480, ONE_NOTE)[:kept])


def test_a_cut_off_message_counts_bytes_with_commas():
    data = raw_file(0, 480, ONE_NOTE + bytes(2000))[:-1]
    with pytest.raises(MidiError, match="cut off after 2,034 bytes"):
        read(data)


def test_a_format_3_header_is_refused():
    with pytest.raises(MidiError, match="^this file says it is MIDI format 3; only formats 0, 1 and 2 exist$"):
        read(raw_file(3, 480, ONE_NOTE))


def test_zero_ticks_per_beat_is_refused():
    with pytest.raises(MidiError, match="a beat lasts 0 ticks"):
        read(raw_file(1, 0, ONE_NOTE))


@pytest.mark.parametrize("division", [0xE700, 0xEC28, 0x8028])  # 0 ticks per frame, -20 fps, -128 fps
def test_an_impossible_smpte_timing_is_refused(division):
    with pytest.raises(MidiError, match="timing header is not valid"):
        read(raw_file(1, division, ONE_NOTE))


def test_a_riff_wrapped_rmi_file_is_unwrapped():
    assert read(riff_wrapped(raw_file(0, 480, ONE_NOTE))).notes == (Note(0.0, 60, 1.0, 64),)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (riff_wrapped(raw_file(0, 480, ONE_NOTE))[:-4], "^this file is cut off after"),
        (
            riff_wrapped(raw_file(0, 480, ONE_NOTE)).replace(b"data", b"junk"),
            "^this RMID file holds no MIDI data$",
        ),
        (b"RIFF" + struct.pack("<I", 4) + b"WAVEfmt ", "^this file is not a MIDI file$"),
    ],
)
def test_a_broken_or_foreign_riff_file_is_refused(data, message):
    with pytest.raises(MidiError, match=message):
        read(data)


def test_data_bytes_over_127_are_clipped_with_a_warning():
    events = bytes.fromhex("00 90 3c c8  83 60 80 3c 40") + END_OF_TRACK  # velocity 200
    with pytest.warns(MidiWarning, match="above 127 and were clipped to 127"):
        score = read(raw_file(0, 480, events))
    assert score.notes == (Note(0.0, 60, 1.0, 127),)


def test_repairs_are_returned_to_the_caller_and_not_warned(recwarn):
    events = bytes.fromhex("00 90 3c c8  83 60 80 3c 40") + END_OF_TRACK  # velocity 200
    score, repairs = read_with_repairs(raw_file(0, 480, events))
    assert repairs == ("some values in this file were above 127 and were clipped to 127",)
    assert score.notes == (Note(0.0, 60, 1.0, 127),) and not recwarn.list


@pytest.mark.parametrize("key_signature", ["00 ff 59 02 0b 05", "00 ff 59 01 02", "00 ff 59 00"])
def test_a_key_signature_mido_cannot_name_does_not_lose_the_file(key_signature):
    score, repairs = read_with_repairs(raw_file(0, 480, bytes.fromhex(key_signature) + ONE_NOTE))
    assert score.notes == (Note(0.0, 60, 1.0, 64),) and repairs == ()


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("00 f4 3c 40", r"this file is damaged \(undefined status byte 0xf4\)"),
        ("00 3c 40", r"this file is damaged \(running status without last_status\)"),
        ("00 ff 51 01 07", "^this file is damaged: a message in it cannot be decoded$"),
        ("00 90 3c", "a track ends in the middle of a message"),
        ("00 ff 01 05 61 62", "a track ends in the middle of a message"),  # text longer than its track
        ("00 f0 81", "a track ends in the middle of a message"),  # sysex length cut off
        ("80 80 80 80 00 90 3c 40", "^this file is damaged: a number in it is longer than the 4 bytes MIDI allows$"),
    ],
)
def test_a_damaged_track_is_refused_plainly(events, message):
    with pytest.raises(MidiError, match=message):
        read(raw_file(0, 480, ONE_NOTE, bytes.fromhex(events)))


def test_a_track_chunk_with_a_garbage_name_is_damaged():
    data = raw_file(1, 480, ONE_NOTE).replace(b"MTrk", b"\x00\x01\x02\x03")
    with pytest.raises(MidiError, match="^this file is damaged: no track where one should start, at byte 14$"):
        read(data)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    data = raw_file(0, 480, ONE_NOTE) + bytes(3_100_000)
    with pytest.raises(MidiError, match=r"^this file is 3\.2 MB; the limit is 2 MB$"):
        read(data)
    path = tmp_path / "big.mid"
    path.write_bytes(bytes(midi.MAX_FILE_BYTES + 1))
    with pytest.raises(MidiError, match=r"^this file is 2\.1 MB; the limit is 2 MB$"):
        read(path)


def test_a_file_with_too_many_notes_is_refused(monkeypatch):
    monkeypatch.setattr(midi, "MAX_NOTES", 3)
    data = midi_bytes([message for pitch in range(60, 64) for message in (on(pitch), off(pitch, 10))])
    with pytest.raises(MidiError, match="^this file has more than 3 notes$"):
        read(data)


def test_a_piece_longer_than_an_hour_is_refused():
    hour_and_a_bit = 3601 * 2 * 480  # ticks at 120 bpm
    with pytest.raises(MidiError, match="^this piece lasts longer than 60 minutes$"):
        read(midi_bytes([on(60), off(60, hour_and_a_bit)]))


def test_an_hour_long_piece_is_fine():
    assert read(midi_bytes([on(60), off(60, 3600 * 2 * 480)])).duration_seconds == pytest.approx(3600)


def test_a_tiny_file_of_two_notes_2_to_the_28_beats_apart_is_refused_by_beats():
    # At 1 microsecond a beat and 1 tick a beat, 52 bytes last 268 s, well under an hour, but
    # their 2^28 beats of silence would chain 67 million time-shift tokens.
    events = "00 ff 51 03 00 00 01  00 90 3c 40  01 80 3c 00  ff ff ff 7f 90 3e 40  01 80 3e 00"
    data = raw_file(0, 1, bytes.fromhex(events) + END_OF_TRACK)
    with pytest.raises(MidiError, match="^this piece lasts longer than 20,000 beats$"):
        read(data)


def test_an_event_at_the_beat_limit_is_read_and_one_a_tick_later_is_refused():
    fast = tempo(100_000)  # 600 bpm: 20,000 beats last 2,000 s
    assert read(midi_bytes([fast, on(60), off(60, midi.MAX_BEATS * 480)])).end_beat == midi.MAX_BEATS
    with pytest.raises(MidiError, match="^this piece lasts longer than 20,000 beats$"):
        read(midi_bytes([fast, on(60), off(60, midi.MAX_BEATS * 480), mido.MetaMessage("end_of_track", time=1)]))


def test_a_dense_file_of_note_ons_is_refused_at_the_note_limit_before_the_rest_is_read():
    strikes = b"".join(bytes((1, 36 + i % 48, 64)) for i in range(midi.MAX_NOTES))  # running status, a tick apart
    damaged_end = bytes.fromhex("00 90 3c")  # never reached: the limit is checked while reading
    data = raw_file(0, 480, bytes.fromhex("00 90 24 40") + strikes + damaged_end)
    with pytest.raises(MidiError, match="^this file has more than 200,000 notes$"):
        read(data)


def test_notes_struck_again_in_the_same_tick_count_once_toward_the_note_limit(monkeypatch):
    monkeypatch.setattr(midi, "MAX_NOTES", 2)
    assert len(read(midi_bytes([on(60), on(60), on(60), on(62), off(60, 480), off(62)])).notes) == 2


@pytest.mark.parametrize(("limit", "refused"), [(6, False), (5, True)])
def test_every_kind_of_event_counts_toward_the_event_limit(monkeypatch, limit, refused):
    monkeypatch.setattr(midi, "MAX_EVENTS", limit)
    controller = mido.Message("control_change", control=7, value=100)
    data = midi_bytes([on(60), off(60, 480)], [controller, program(3)])  # 6 events with the two ends of track
    if refused:
        with pytest.raises(MidiError, match=r"^this file has more than 5 events \(notes, controllers and others\)$"):
            read(data)
    else:
        assert read(data).notes == (Note(0.0, 60, 1.0, 64, program=3),)


def test_a_file_of_40000_tracks_reads_the_notes_of_its_one_full_track():
    empty = [b""] * 39_999  # MTrk chunks without events; the track count is unsigned 16-bit
    score = read(raw_file(1, 480, *empty[:20_000], ONE_NOTE, *empty[20_000:]))
    assert score.notes == (Note(0.0, 60, 1.0, 64),) and score.track_count == 1


def test_running_status_carries_over_meta_and_sysex_events():
    sysex = "00 f0 81 48" + " 01" * 200  # 200 data bytes: a two-byte length
    events = f"00 90 3c 40  00 ff 01 02 68 69  {sysex}  83 60 3c 00  00 3e 50  83 60 3e 00"
    data = raw_file(0, 480, bytes.fromhex(events) + END_OF_TRACK)
    assert read(data).notes == (Note(0.0, 60, 1.0, 64), Note(1.0, 62, 2.0, 80))


def test_system_messages_are_skipped_by_their_length():
    events = "00 f1 10  00 f2 01 02  00 f3 05  00 f6  00 f8  00 fe  00 90 3c 40  83 60 3c 00"
    assert read(raw_file(0, 480, bytes.fromhex(events) + END_OF_TRACK)).notes == (Note(0.0, 60, 1.0, 64),)


MUTATION_BASE = midi_bytes(
    [tempo(600_000), mido.MetaMessage("key_signature", key="D"), program(5), on(60), off(60, 480)],
    [on(36, channel=9), on(40, 240, channel=9), off(36, 100, channel=9), mido.MetaMessage("text", text="hi")],
)


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(st.tuples(st.integers(0, len(MUTATION_BASE) - 1), st.integers(0, 255)), max_size=6),
    kept=st.integers(1, len(MUTATION_BASE)),
)
def test_a_damaged_file_gives_a_score_or_a_midi_error_and_nothing_else(changes, kept):
    data = bytearray(MUTATION_BASE)
    for position, value in changes:
        data[position] = value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MidiWarning)
        try:
            assert isinstance(read(bytes(data[:kept])), Score)
        except MidiError as error:
            assert str(error) and str(error)[0].islower()


# Writing and round trips.


def test_write_gives_a_format_1_file_with_a_tempo_track_then_one_track_per_instrument():
    score = Score(
        (Note(0.0, 60, 1.0, 90, 0), Note(0.5, 36, 0.75, 100, 0, True), Note(1.0, 67, 2.0, 70, 41)),
        (Tempo(0.0, 600_000), Tempo(2.0, 450_000)),
        (6, 8),
        960,
    )
    midi_file = mido.MidiFile(file=io.BytesIO(write(score)))
    assert (midi_file.type, midi_file.ticks_per_beat, len(midi_file.tracks)) == (1, 960, 4)
    assert {m.type for m in midi_file.tracks[0]} == {"time_signature", "set_tempo", "end_of_track"}
    channels = [{m.channel for m in track if not m.is_meta} for track in midi_file.tracks[1:]]
    assert channels == [{0}, {9}, {1}]
    assert read(write(score)) == score


def test_more_than_15_programs_share_channels_and_keep_their_programs():
    notes = tuple(Note(float(i), 40 + i, i + 1.0, 80, program=i * 5) for i in range(20))
    written = mido.MidiFile(file=io.BytesIO(write(Score(notes))))
    sixteenth_program_channels = {message.channel for message in written.tracks[16] if not message.is_meta}
    assert sixteenth_program_channels == {0}
    assert read(write(Score(notes))).notes == notes


def test_voices_in_unison_come_back_exactly():
    notes = (Note(0.0, 60, 2.0, 80), Note(1.0, 60, 3.0, 90), Note(1.0, 60, 1.5, 70, program=8), Note(1.0, 60, 2.5))
    assert read(write(Score(notes))).notes == Score(notes).notes


def test_notes_off_the_tick_grid_are_rounded_and_last_at_least_a_tick():
    notes = (Note(0.1001, 60, 0.1002, 80), Note(1 / 3, 62, 2 / 3, 80))
    score = read(write(Score(notes, ticks_per_beat=96)))
    assert score.notes == (Note(10 / 96, 60, 11 / 96, 80), Note(32 / 96, 62, 64 / 96, 80))


@st.composite
def scores_on_the_tick_grid(draw) -> Score:
    """Scores that MIDI holds exactly: times on the grid, no two notes of one pitch at once on one channel."""
    ticks_per_beat = draw(st.sampled_from([24, 96, 480, 960]))
    programs = draw(st.lists(st.integers(0, 127), min_size=1, max_size=15, unique=True))
    drum_program = draw(st.integers(0, 127))
    raw = draw(
        st.lists(
            st.tuples(
                st.integers(0, 32 * ticks_per_beat),  # start tick
                st.integers(1, 4 * ticks_per_beat),  # length in ticks
                st.integers(0, 127),  # pitch
                st.integers(1, 127),  # velocity
                st.sampled_from(programs),
                st.booleans(),  # is_drum
            ),
            min_size=1,
            max_size=40,
        )
    )
    notes, busy_until = [], {}  # (channel, pitch) -> tick where its last note ends
    for start, length, pitch, velocity, program_number, is_drum in sorted(raw):
        key = ("drums" if is_drum else program_number, pitch)
        if busy_until.get(key, 0) <= start:
            busy_until[key] = start + length
            start_beat, end_beat = start / ticks_per_beat, (start + length) / ticks_per_beat
            chosen = drum_program if is_drum else program_number
            notes.append(Note(start_beat, pitch, end_beat, velocity, chosen, is_drum))
    return Score(tuple(notes), draw(tempo_maps(ticks_per_beat)), draw(time_signatures()), ticks_per_beat)


def tempo_maps(ticks_per_beat: int) -> st.SearchStrategy[tuple[Tempo, ...]]:
    changes = st.dictionaries(st.integers(1, 40 * ticks_per_beat), st.integers(200_000, 2_000_000), max_size=5)
    return st.builds(_tempo_map_of, st.integers(200_000, 2_000_000), changes, st.just(ticks_per_beat))


def _tempo_map_of(first: int, changes: dict[int, int], ticks_per_beat: int) -> tuple[Tempo, ...]:
    tempos = [Tempo(0.0, first)]
    for tick, microseconds in sorted(changes.items()):
        if microseconds != tempos[-1].microseconds_per_beat:
            tempos.append(Tempo(tick / ticks_per_beat, microseconds))
    return tuple(tempos)


def time_signatures() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(1, 32), st.sampled_from([1, 2, 4, 8, 16, 32, 64]))


@settings(max_examples=200, deadline=None)
@given(scores_on_the_tick_grid())
def test_scores_on_the_tick_grid_come_back_exactly(score):
    assert read(write(score)) == score


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.builds(
            Note,
            start=st.floats(0, 20),
            pitch=st.integers(0, 127),
            end=st.floats(0, 30),
            velocity=st.integers(1, 127),
            program=st.sampled_from(range(0, 128, 9)),  # 15 programs: past that, channels are shared
            is_drum=st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_any_score_settles_after_one_round_trip(notes):
    once = read(write(Score(tuple(notes), ticks_per_beat=96)))
    assert read(write(once)) == once
