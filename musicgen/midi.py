"""MIDI files <-> Score: the only module that imports mido (for writing; reading has its own parser).

Reading follows these rules:

- Times become beats (quarter notes): ticks / ticks_per_beat. Files timed in SMPTE frames
  instead of beats are read as if at 120 beats per minute (beat = seconds * 2, the tempo
  map is plain 120 bpm and the score gets 480 ticks per beat), so seconds come out right.
- Formats 0 and 1 play all tracks together. Format 2 tracks are independent sequences:
  they are played one after another, each starting at 120 bpm unless it sets its own tempo.
- Notes are matched per (track, channel, pitch). A note-on with velocity 0 is a note-off.
  A pitch struck again before its release ends at the new onset; a note-off at the very
  tick its note started is taken to belong to an earlier note, so the note stays on. A
  note never released ends with its track (its last message), or lasts a sixteenth note
  if the track ends where it starts. Note-offs with no note-on are ignored, and so are
  tempo changes to 0 and time signatures with a zero numerator or a denominator over 64.
- A note's program is the last program change on its channel at or before its onset (0
  if none); notes on channel 10 (index 9) are drums.
- Only what the score uses is decoded: notes, program changes, tempos, time signatures
  and the tick of each track's last message. Every other event (controllers, sysex, key
  signatures, text...) is skipped by its length, so a key signature no program can name
  does not lose the file. Running status carries over meta and system messages.
- Data bytes over 127 are clipped to 127 (a repair: `read` warns with a `MidiWarning`,
  `read_with_repairs` returns it); a RIFF `.rmi` file is unwrapped.
- The limits below are checked while the events are read, so a file is refused as soon
  as it passes one; MAX_SECONDS is checked once the tempo map is known.
  Every other failure raises `MidiError` with a message for the user.
"""

from __future__ import annotations

import bisect
import io
import math
import os
import struct
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import mido

from musicgen.score import DEFAULT_MICROSECONDS_PER_BEAT, Note, Score, Tempo

MAX_FILE_BYTES = 2_000_000  # largest file read, in bytes; the app's upload limit matches it
# Most events (messages of every kind) in one file. Skipping an event takes a fraction of a
# microsecond, so this bounds memory more than time: the program changes and tempos kept
# while reading take about 180 bytes each (125 MB for 700,000 program changes). A 2 MB
# file of 3-byte events (running status, such as 666,000 controller changes) stays
# readable; one of 2-byte events is refused after 1.4 MB.
MAX_EVENTS = 700_000
MAX_NOTES = 200_000  # most notes in one file
# Latest event of a piece, in beats (quarter notes). 60 minutes at 240 bpm is 14,400 beats,
# so no piece that MAX_SECONDS lets in at a playable tempo is refused. Seconds alone do not
# bound a piece: at a tempo of 1 microsecond a beat, 2^28 beats last 268 s, and every beat
# of silence or of a held note costs tokens (see musicgen.tokens.MAX_PIECE_TOKENS).
MAX_BEATS = 20_000
MAX_SECONDS = 3600  # longest piece, in seconds
SMPTE_SCORE_TICKS_PER_BEAT = 480  # ticks_per_beat of a score read from an SMPTE-timed file
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0
MELODIC_CHANNELS = tuple(channel for channel in range(16) if channel != DRUM_CHANNEL)
SMPTE_FRAMES_PER_SECOND = {24: 24.0, 25: 25.0, 29: 30000 / 1001, 30: 30.0}  # 29 means 29.97 drop-frame

_CLIPPED = "some values in this file were above 127 and were clipped to 127"
_CUT_MESSAGE = "this file is damaged: a track ends in the middle of a message"
_SET_TEMPO, _TIME_SIGNATURE = 0x51, 0x58  # meta event types the score uses
_SYSTEM_DATA_BYTES = {0xF1: 1, 0xF2: 2, 0xF3: 1, 0xF6: 0, 0xF8: 0, 0xFA: 0, 0xFB: 0, 0xFC: 0, 0xFE: 0}
_NOTE_OFF, _PROGRAM_CHANGE, _NOTE_ON = 0, 1, 2  # order of written events at the same tick


class MidiError(Exception):
    """A MIDI file that cannot be read; the message says why in plain words."""


class MidiWarning(UserWarning):
    """A MIDI file that was read, but only after repairing it."""


@dataclass(frozen=True)
class _Timing:
    """How file ticks map to beats."""

    ticks_per_beat: float  # file ticks in one beat; for SMPTE files, ticks in half a second
    score_ticks_per_beat: int  # the resolution the score reports
    follows_tempo: bool  # False for SMPTE files, whose ticks are fixed lengths of time


class _Header(NamedTuple):
    format: int  # 0, 1 or 2
    timing: _Timing
    tracks: tuple[bytes, ...]  # every MTrk chunk, header included


@dataclass
class _Found:
    """What the score needs from the events of a file, gathered while they are parsed."""

    last_tick: float  # tick of MAX_BEATS: no event may come later
    sixteenth: int  # ticks a note lasts when its track ends where it starts
    spans: list[tuple[int, int, int, int]] = field(default_factory=list)  # (start, channel << 7 | pitch, velocity, end)
    programs: list[tuple[int, int, int]] = field(default_factory=list)  # (channel, tick, program) in file order
    tempos: list[tuple[int, int]] = field(default_factory=list)  # (tick, microseconds per beat) in file order
    signatures: list[tuple[int, int, int]] = field(default_factory=list)  # (tick, numerator, denominator)
    notes: int = 0  # notes so far, for MAX_NOTES
    events: int = 0  # events so far, for MAX_EVENTS
    tracks_with_notes: int = 0
    clipped: bool = False  # a data byte over 127 was clipped


# Reading.


def read(source: str | os.PathLike | bytes) -> Score:
    """The score in a MIDI file, given as a path or as its bytes; raises MidiError, warns of repairs."""
    score, repairs = read_with_repairs(source)
    for repair in repairs:
        warnings.warn(repair, MidiWarning, stacklevel=2)
    return score


def read_with_repairs(source: str | os.PathLike | bytes) -> tuple[Score, tuple[str, ...]]:
    """The score in a MIDI file and a sentence for each repair made to read it; raises MidiError."""
    data = bytes(source) if isinstance(source, bytes | bytearray) else _read_path(source)
    _check_size(len(data))
    header = _parse_header(_unwrap_riff(data))
    found = _read_events(header)
    return _score_from_events(found, header), ((_CLIPPED,) if found.clipped else ())


def _read_path(path: str | os.PathLike) -> bytes:
    """The bytes of a file, refusing big files before reading them."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            _check_size(os.fstat(file.fileno()).st_size)
            return file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise MidiError(f"file not found: {name}") from None
    except IsADirectoryError:
        raise MidiError(f"this is a folder, not a file: {name}") from None
    except OSError as error:
        raise MidiError(f"cannot open {name}: {(error.strerror or str(error)).lower()}") from error


def _check_size(size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise MidiError(f"this file is {_megabytes(size)} MB; the limit is {_megabytes(MAX_FILE_BYTES)} MB")


def _megabytes(size: int) -> str:
    """Size in MB with one decimal, rounded up so that a file over the limit never looks at it."""
    return f"{math.ceil(size / 100_000) / 10:g}"


def _unwrap_riff(data: bytes) -> bytes:
    """The Standard MIDI File inside a RIFF `.rmi` file; other data unchanged."""
    if not data.startswith(b"RIFF"):
        return data
    if data[8:12] != b"RMID":
        raise MidiError("this file is not a MIDI file")
    position = 12
    while position + 8 <= len(data):
        name, size = _chunk_at(data, position, "little")
        if name == b"data":
            _cut_off_check(data, position + 8 + size)
            return data[position + 8 : position + 8 + size]
        position += 8 + size + size % 2  # RIFF chunks are padded to an even length
    raise MidiError("this RMID file holds no MIDI data")


def _chunk_at(data: bytes, position: int, byteorder: str) -> tuple[bytes, int]:
    """Name and data size of the chunk starting at `position`."""
    return data[position : position + 4], int.from_bytes(data[position + 4 : position + 8], byteorder)


def _cut_off_check(data: bytes, needed: int) -> None:
    """Raise when `data` is shorter than `needed` bytes."""
    if len(data) < needed:
        raise MidiError(f"this file is cut off after {len(data):,} bytes")


def _parse_header(data: bytes) -> _Header:
    """Check the file header and find the track chunks, before their events are read."""
    if not data:
        raise MidiError("this file is empty")
    if not data.startswith(b"MThd"):
        raise MidiError("this file is not a MIDI file")
    _cut_off_check(data, 14)
    header_size = int.from_bytes(data[4:8], "big")
    if header_size < 6:
        raise MidiError("this file is damaged: its header is too short")
    _cut_off_check(data, 8 + header_size)
    file_format, track_count, division = struct.unpack(">HHH", data[8:14])  # unsigned: up to 65,535 tracks
    if file_format > 2:
        raise MidiError(f"this file says it is MIDI format {file_format}; only formats 0, 1 and 2 exist")
    return _Header(file_format, _timing(division), _track_chunks(data, 8 + header_size, track_count))


def _timing(division: int) -> _Timing:
    """Ticks per beat from the header's division word (ticks per beat, or SMPTE frames)."""
    if not division & 0x8000:
        if division == 0:
            raise MidiError("this file is damaged: it says a beat lasts 0 ticks")
        return _Timing(division, division, True)
    frames_per_second, ticks_per_frame = 256 - (division >> 8), division & 0xFF
    if frames_per_second not in SMPTE_FRAMES_PER_SECOND or ticks_per_frame == 0:
        raise MidiError("this file is damaged: its timing header is not valid")
    ticks_per_second = SMPTE_FRAMES_PER_SECOND[frames_per_second] * ticks_per_frame
    return _Timing(ticks_per_second / 2, SMPTE_SCORE_TICKS_PER_BEAT, False)


def _track_chunks(data: bytes, position: int, track_count: int) -> tuple[bytes, ...]:
    """The `track_count` MTrk chunks from `position` on, skipping chunks of other kinds."""
    chunks: list[bytes] = []
    while len(chunks) < track_count:
        _cut_off_check(data, position + 8)
        name, size = _chunk_at(data, position, "big")
        if not (name.isascii() and name.isalpha()):
            raise MidiError(f"this file is damaged: no track where one should start, at byte {position:,}")
        _cut_off_check(data, position + 8 + size)
        if name == b"MTrk":
            chunks.append(data[position : position + 8 + size])
        position += 8 + size
    return tuple(chunks)


# The events of the tracks.


def _read_events(header: _Header) -> _Found:
    """Notes, program changes, tempos and time signatures of every track; format 2 tracks follow one another."""
    ticks_per_beat = header.timing.ticks_per_beat
    found = _Found(MAX_BEATS * ticks_per_beat, max(1, round(ticks_per_beat / 4)))
    start = 0
    for chunk in header.tracks:
        if header.format == 2:
            found.tempos.append((start, DEFAULT_MICROSECONDS_PER_BEAT))  # each track starts at 120 bpm
        end = _read_track(chunk, start, found)
        start = end if header.format == 2 else 0
    return found


def _read_track(chunk: bytes, tick: int, found: _Found) -> int:
    """Gather the events of one MTrk chunk (header included) that starts at `tick`; return its last tick.

    The hot loop of reading, kept in one function so that a channel message costs no call;
    meta, sysex and system messages go to `_system_event`.
    """
    sounding: dict[int, tuple[int, int]] = {}  # channel << 7 | pitch -> (start tick, velocity)
    spans, programs, last_tick, notes = [], found.programs, found.last_tick, found.notes
    position, size, status, clipped = 8, len(chunk), 0, False  # status: the running status, 0 before any
    budget = MAX_EVENTS - found.events
    try:
        for read_so_far in range(budget):
            if position >= size:
                events = read_so_far
                break
            delta, position = chunk[position], position + 1
            if delta > 127:
                delta, position = _long_number(chunk, position, delta)
            tick += delta
            if tick > last_tick:
                raise MidiError(f"this piece lasts longer than {MAX_BEATS:,} beats")
            byte = chunk[position]
            if byte >= 0xF0:
                position = _system_event(chunk, position + 1, byte, tick, found)
                continue
            if byte > 127:
                status, position = byte, position + 1
                byte = chunk[position]
            elif not status:
                raise MidiError("this file is damaged (running status without last_status)")
            kind, position = status >> 4, position + 1
            if kind == 0xC or kind == 0xD:  # program change, channel pressure: one data byte
                if byte > 127:
                    byte, clipped = 127, True
                if kind == 0xC:
                    programs.append((status & 15, tick, byte))
                continue
            second, position = chunk[position], position + 1
            if byte > 127 or second > 127:
                byte, second, clipped = min(byte, 127), min(second, 127), True
            if kind > 9:  # aftertouch, controller, pitch bend
                continue
            key = (status & 15) << 7 | byte
            started = sounding.get(key)
            if started is not None and started[0] < tick:  # a note-off, or a note struck again
                spans.append((started[0], key, started[1], tick))
                del sounding[key]
                started = None
            if kind == 9 and second:
                if started is None:  # else it replaces a note struck at this same tick
                    notes += 1
                    if notes > MAX_NOTES:
                        raise MidiError(f"this file has more than {MAX_NOTES:,} notes")
                sounding[key] = (tick, second)
        else:
            if position < size:
                raise MidiError(f"this file has more than {MAX_EVENTS:,} events (notes, controllers and others)")
            events = budget
    except IndexError:
        raise MidiError(_CUT_MESSAGE) from None
    for key, (start, velocity) in sounding.items():  # notes never released end with the track
        spans.append((start, key, velocity, tick if tick > start else start + found.sixteenth))
    found.spans += spans
    found.tracks_with_notes += bool(spans)
    found.notes, found.events, found.clipped = notes, found.events + events, found.clipped or clipped
    return tick


def _long_number(chunk: bytes, position: int, first: int) -> tuple[int, int]:
    """A variable-length number whose first byte (over 127) is read, and the position after it."""
    number = first & 0x7F
    for at in range(position, position + 3):  # MIDI numbers take at most 4 bytes
        byte = chunk[at]
        number = number << 7 | byte & 0x7F
        if byte < 0x80:
            return number, at + 1
    raise MidiError("this file is damaged: a number in it is longer than the 4 bytes MIDI allows")


def _number(chunk: bytes, position: int) -> tuple[int, int]:
    """The variable-length number at `position` and the position after it."""
    first = chunk[position]
    return (first, position + 1) if first < 0x80 else _long_number(chunk, position + 1, first)


def _skip(chunk: bytes, position: int, length: int) -> int:
    """The position `length` bytes on, which must be inside the track."""
    if position + length > len(chunk):
        raise MidiError(_CUT_MESSAGE)
    return position + length


def _system_event(chunk: bytes, position: int, status: int, tick: int, found: _Found) -> int:
    """Read the meta, sysex or system message whose status byte precedes `position`; return where the next starts."""
    if status == 0xFF:
        return _meta_event(chunk, position, tick, found)
    if status == 0xF0 or status == 0xF7:  # sysex: a length, then data the score does not use
        length, position = _number(chunk, position)
        return _skip(chunk, position, length)
    if status not in _SYSTEM_DATA_BYTES:
        raise MidiError(f"this file is damaged (undefined status byte 0x{status:02x})")
    end = _skip(chunk, position, _SYSTEM_DATA_BYTES[status])
    found.clipped = found.clipped or any(byte > 127 for byte in chunk[position:end])
    return end


def _meta_event(chunk: bytes, position: int, tick: int, found: _Found) -> int:
    """Read a meta event after its 0xFF, keeping tempos and usable time signatures; return where the next starts."""
    meta_type = chunk[position]
    length, start = _number(chunk, position + 1)
    end = _skip(chunk, start, length)
    if meta_type == _SET_TEMPO or meta_type == _TIME_SIGNATURE:
        data = chunk[start:end]
        if len(data) < (3 if meta_type == _SET_TEMPO else 4):
            raise MidiError("this file is damaged: a message in it cannot be decoded")
        if meta_type == _SET_TEMPO and int.from_bytes(data[:3], "big"):
            found.tempos.append((tick, int.from_bytes(data[:3], "big")))
        elif meta_type == _TIME_SIGNATURE and data[0] > 0 and data[1] <= 6:  # denominator 2 ** data[1], up to 64
            found.signatures.append((tick, data[0], 2 ** data[1]))
    return end


# From events to the score.


def _score_from_events(found: _Found, header: _Header) -> Score:
    """The score of the gathered events, checked against MAX_SECONDS."""
    if not found.spans:
        raise MidiError("this file has no notes")
    timing = header.timing
    fields = _note_fields(found.spans, _program_changes(found.programs), timing.ticks_per_beat)
    notes = tuple(Note(*note_fields) for note_fields in sorted(fields))  # sorted as Score sorts, but faster
    tempos = _tempo_map(found.tempos, timing)
    signature = _time_signature(found.signatures)
    score = Score(notes, tempos, signature, timing.score_ticks_per_beat, found.tracks_with_notes)
    if score.duration_seconds > MAX_SECONDS:
        raise MidiError(f"this piece lasts longer than {MAX_SECONDS / 60:g} minutes")
    return score


def _program_changes(found: list[tuple[int, int, int]]) -> dict[int, tuple[list[int], list[int]]]:
    """Channel -> (ticks, programs) of its program changes, in time order."""
    changes = defaultdict(lambda: ([], []))
    for channel, tick, program in sorted(found, key=lambda change: change[:2]):
        changes[channel][0].append(tick)
        changes[channel][1].append(program)
    return changes


def _note_fields(
    spans: list[tuple[int, int, int, int]], programs: dict[int, tuple[list[int], list[int]]], ticks_per_beat: float
) -> list[tuple[float, int, float, int, int, bool]]:
    """The fields of a Note, in order, for each span (start, channel << 7 | pitch, velocity, end)."""
    fields = []
    for start, key, velocity, end in spans:
        channel = key >> 7
        program = 0
        if channel in programs:
            ticks, channel_programs = programs[channel]
            index = bisect.bisect_right(ticks, start) - 1
            program = channel_programs[index] if index >= 0 else 0
        fields.append(
            (start / ticks_per_beat, key & 127, end / ticks_per_beat, velocity, program, channel == DRUM_CHANNEL)
        )
    return fields


def _tempo_map(found: list[tuple[int, int]], timing: _Timing) -> tuple[Tempo, ...]:
    """Tempo changes from every track, the last one winning at a tick, repeats dropped."""
    if not timing.follows_tempo:
        return (Tempo(0.0),)
    changes = [(0, DEFAULT_MICROSECONDS_PER_BEAT), *found]
    at_tick = dict(sorted(changes, key=lambda change: change[0]))
    kept: list[tuple[int, int]] = []
    for tick, tempo in at_tick.items():
        if not kept or kept[-1][1] != tempo:
            kept.append((tick, tempo))
    return tuple(Tempo(tick / timing.ticks_per_beat, tempo) for tick, tempo in kept)


def _time_signature(found: list[tuple[int, int, int]]) -> tuple[int, int]:
    """The first usable time signature of the piece, 4/4 if there is none."""
    if not found:
        return (4, 4)
    _, numerator, denominator = min(found, key=lambda signature: signature[0])
    return (numerator, denominator)


# Writing.


def write(score: Score) -> bytes:
    """A format-1 MIDI file: a tempo track, then tracks per (program, is_drum).

    Drums go on channel 10 and programs on the other channels; past 15 programs, channels
    are shared, with a program change wherever the program on a channel switches. Notes
    last at least one tick. Notes of one pitch that overlap (two voices in unison) go to
    separate tracks of their instrument, so `read` gives every note back exactly.
    """
    midi_file = mido.MidiFile(type=1, ticks_per_beat=score.ticks_per_beat)
    midi_file.tracks.append(_track_from_events(_conductor_events(score)))
    midi_file.tracks += [_track_from_events(events) for events in _instrument_events(score).values()]
    buffer = io.BytesIO()
    midi_file.save(file=buffer)
    return buffer.getvalue()


def _conductor_events(score: Score) -> list[tuple[int, int, mido.MetaMessage]]:
    """(tick, rank, message) of the time signature and the tempo map."""
    numerator, denominator = score.time_signature
    events = [(0, 0, mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator))]
    for tempo in score.tempos:  # rank 1: after the time signature, the later of two tempos at a tick wins
        message = mido.MetaMessage("set_tempo", tempo=tempo.microseconds_per_beat)
        events.append((round(tempo.beat * score.ticks_per_beat), 1, message))
    return events


def _instrument_events(score: Score) -> dict[tuple[int, bool, int], list[tuple[int, int, mido.Message]]]:
    """(program, is_drum, layer) -> (tick, rank, message) of its program changes and notes."""
    channels = _channel_of_instrument(score.notes)
    by_channel = defaultdict(list)  # channel -> (start tick, end tick, note)
    for note in score.notes:
        start = round(note.start * score.ticks_per_beat)
        end = max(round(note.end * score.ticks_per_beat), start + 1)
        by_channel[channels[note.program, note.is_drum]].append((start, end, note))
    events = defaultdict(list)
    for channel, timed_notes in sorted(by_channel.items()):
        _add_channel_events(events, channel, _layers(sorted(timed_notes)))
    return dict(sorted(events.items()))


def _layers(timed_notes: list[tuple[int, int, Note]]) -> list[tuple[int, int, Note, int]]:
    """(start, end, note, layer): no two notes of one pitch overlap within a layer (each layer is a track)."""
    ends: list[dict[int, int]] = []  # per layer: pitch -> end tick of its last note
    layered = []
    for start, end, note in timed_notes:
        layer = next((i for i, last in enumerate(ends) if last.get(note.pitch, start) <= start), len(ends))
        if layer == len(ends):
            ends.append({})
        ends[layer][note.pitch] = end
        layered.append((start, end, note, layer))
    return layered


def _channel_of_instrument(notes: tuple[Note, ...]) -> dict[tuple[int, bool], int]:
    """Drums on channel 10; programs in order on the others, round and round past 15."""
    instruments = sorted({(note.program, note.is_drum) for note in notes})
    melodic = [instrument for instrument in instruments if not instrument[1]]
    channels = {instrument: MELODIC_CHANNELS[i % len(MELODIC_CHANNELS)] for i, instrument in enumerate(melodic)}
    return channels | {instrument: DRUM_CHANNEL for instrument in instruments if instrument[1]}


def _add_channel_events(events: dict, channel: int, layered_notes: list[tuple[int, int, Note, int]]) -> None:
    """Append a channel's program changes and notes, in time order, to the events of their tracks."""
    program = None
    for start, end, note, layer in layered_notes:
        track = events[note.program, note.is_drum, layer]
        if note.program != program:
            change = mido.Message("program_change", channel=channel, program=note.program)
            track.append((0 if program is None else start, _PROGRAM_CHANGE, change))
            program = note.program
        track.append((start, _NOTE_ON, _note_message("note_on", channel, note.pitch, note.velocity)))
        track.append((end, _NOTE_OFF, _note_message("note_off", channel, note.pitch, 0)))


def _note_message(kind: str, channel: int, pitch: int, velocity: int) -> mido.Message:
    return mido.Message(kind, channel=channel, note=pitch, velocity=velocity)


def _track_from_events(events: list[tuple[int, int, mido.Message | mido.MetaMessage]]) -> mido.MidiTrack:
    """A track of (tick, rank, message) events in time order, with delta times."""
    track, previous = mido.MidiTrack(), 0
    for tick, _, message in sorted(events, key=lambda event: event[:2]):
        message.time = tick - previous
        track.append(message)
        previous = tick
    return track
