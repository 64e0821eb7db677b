"""MIDI files <-> Score: the only module that imports mido.

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
- Data bytes over 127 are clipped to 127 (a repair: `read` warns with a `MidiWarning`,
  `read_with_repairs` returns it); a RIFF `.rmi` file is unwrapped. A key signature mido
  cannot name is read as C major: scores do not use key signatures, so the file is kept.
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
from dataclasses import dataclass
from typing import NamedTuple

import mido

from musicgen.score import DEFAULT_MICROSECONDS_PER_BEAT, Note, Score, Tempo

MAX_FILE_BYTES = 2_000_000  # largest file read, in bytes; the app's upload limit matches it
MAX_NOTES = 200_000  # most notes in one file
MAX_SECONDS = 3600  # longest piece, in seconds
SMPTE_SCORE_TICKS_PER_BEAT = 480  # ticks_per_beat of a score read from an SMPTE-timed file
DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0
MELODIC_CHANNELS = tuple(channel for channel in range(16) if channel != DRUM_CHANNEL)
SMPTE_FRAMES_PER_SECOND = {24: 24.0, 25: 25.0, 29: 30000 / 1001, 30: 30.0}  # 29 means 29.97 drop-frame

# Everything mido 1.3 raises on a bad file (key signatures excepted, see _LenientKeySignature).
_MIDO_ERRORS = (EOFError, OSError, ValueError, LookupError, TypeError, struct.error)
_CLIPPABLE_ERROR = "data byte must be in range 0..127"
_NOTE_OFF, _PROGRAM_CHANGE, _NOTE_ON = 0, 1, 2  # order of written events at the same tick


class _LenientKeySignature(mido.midifiles.meta.MetaSpec_key_signature):
    """mido's key signature, except that one it cannot name (say 11 sharps) is read as C instead of failing."""

    type = "key_signature"

    def decode(self, message, data):
        try:
            super().decode(message, data)
        except (mido.KeySignatureError, IndexError):
            message.key = "C"


mido.midifiles.meta.add_meta_spec(_LenientKeySignature)  # this module is the project's only mido user


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


class _TimedTrack(NamedTuple):
    start: int  # absolute tick where the track begins (after earlier tracks in format 2)
    events: list[tuple[int, mido.Message]]  # (absolute tick, message)

    @property
    def end(self) -> int:
        """Absolute tick of the last message."""
        return self.events[-1][0] if self.events else self.start


class _Span(NamedTuple):
    channel: int
    pitch: int
    start: int  # ticks
    velocity: int
    end: int  # ticks


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
    midi_file, repairs = _load(_standard_bytes(header))
    return _score_from_tracks(_timed_tracks(midi_file, header.format), header), repairs


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
    """Check the file header and the track chunks cheaply, before mido parses the events."""
    if not data:
        raise MidiError("this file is empty")
    if not data.startswith(b"MThd"):
        raise MidiError("this file is not a MIDI file")
    _cut_off_check(data, 14)
    header_size = int.from_bytes(data[4:8], "big")
    if header_size < 6:
        raise MidiError("this file is damaged: its header is too short")
    _cut_off_check(data, 8 + header_size)
    file_format, track_count, division = struct.unpack(">HHH", data[8:14])
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


def _standard_bytes(header: _Header) -> bytes:
    """A clean file for mido: a plain six-byte header and the MTrk chunks only."""
    division = struct.pack(">H", 1)  # mido misreads SMPTE timing; `header.timing` holds the truth
    fields = struct.pack(">IHH", 6, header.format, len(header.tracks)) + division
    return b"MThd" + fields + b"".join(header.tracks)


def _load(data: bytes) -> tuple[mido.MidiFile, tuple[str, ...]]:
    """Parse with mido; when only data bytes over 127 stop it, parse again clipping them."""
    try:
        return mido.MidiFile(file=io.BytesIO(data)), ()
    except _MIDO_ERRORS as error:
        if str(error) != _CLIPPABLE_ERROR:
            raise _damaged(error) from error
    try:
        midi_file = mido.MidiFile(file=io.BytesIO(data), clip=True)
    except _MIDO_ERRORS as error:
        raise _damaged(error) from error
    return midi_file, ("some values in this file were above 127 and were clipped to 127",)


def _damaged(error: Exception) -> MidiError:
    """A plain message for an error mido raised; its own words only where they say something."""
    if isinstance(error, EOFError):
        return MidiError("this file is damaged: a track ends in the middle of a message")
    if isinstance(error, LookupError | TypeError | struct.error):  # a meta message too short to decode
        return MidiError("this file is damaged: a message in it cannot be decoded")
    return MidiError(f"this file is damaged ({str(error).lower()})")


def _timed_tracks(midi_file: mido.MidiFile, file_format: int) -> list[_TimedTrack]:
    """Every track with absolute ticks; format 2 tracks follow one another."""
    tracks, start = [], 0
    for track in midi_file.tracks:
        tick, events = start, []
        for message in track:
            tick += message.time
            events.append((tick, message))
        tracks.append(_TimedTrack(start, events))
        start = tick if file_format == 2 else 0
    return tracks


def _score_from_tracks(tracks: list[_TimedTrack], header: _Header) -> Score:
    """The score of parsed tracks, checked against the limits."""
    timing = header.timing
    spans_per_track = [_note_spans(track, timing) for track in tracks]
    spans = [span for track_spans in spans_per_track for span in track_spans]
    if not spans:
        raise MidiError("this file has no notes")
    if len(spans) > MAX_NOTES:
        raise MidiError(f"this file has more than {MAX_NOTES:,} notes")
    programs = _program_changes(tracks)
    notes = tuple(_note(span, programs, timing) for span in spans)
    tempos = _tempo_map(tracks, timing, resets_per_track=header.format == 2)
    track_count = sum(1 for track_spans in spans_per_track if track_spans)
    score = Score(notes, tempos, _time_signature(tracks), timing.score_ticks_per_beat, track_count)
    if score.duration_seconds > MAX_SECONDS:
        raise MidiError(f"this piece lasts longer than {MAX_SECONDS / 60:g} minutes")
    return score


def _note_spans(track: _TimedTrack, timing: _Timing) -> list[_Span]:
    """Note-ons paired with their note-offs in one track, keyed by (channel, pitch)."""
    sounding: dict[tuple[int, int], tuple[int, int]] = {}  # (channel, pitch) -> (start tick, velocity)
    spans = []
    for tick, message in track.events:
        if message.type not in ("note_on", "note_off"):
            continue
        key = (message.channel, message.note)
        if key in sounding and sounding[key][0] < tick:
            spans.append(_Span(*key, *sounding.pop(key), tick))
        if message.type == "note_on" and message.velocity > 0:
            sounding[key] = (tick, message.velocity)  # replaces a note struck at this same tick
    shortest = max(1, round(timing.ticks_per_beat / 4))  # a sixteenth note, for notes left on at the end
    for key, (start, velocity) in sounding.items():
        spans.append(_Span(*key, start, velocity, track.end if track.end > start else start + shortest))
    return spans


def _program_changes(tracks: list[_TimedTrack]) -> dict[int, tuple[list[int], list[int]]]:
    """Channel -> (ticks, programs) of its program changes, in time order."""
    changes = defaultdict(lambda: ([], []))
    found = [
        (message.channel, tick, message.program)
        for track in tracks
        for tick, message in track.events
        if message.type == "program_change"
    ]
    for channel, tick, program in sorted(found, key=lambda change: change[:2]):
        changes[channel][0].append(tick)
        changes[channel][1].append(program)
    return changes


def _note(span: _Span, programs: dict[int, tuple[list[int], list[int]]], timing: _Timing) -> Note:
    ticks, channel_programs = programs.get(span.channel, ([], []))
    index = bisect.bisect_right(ticks, span.start) - 1
    program = channel_programs[index] if index >= 0 else 0
    start, end = span.start / timing.ticks_per_beat, span.end / timing.ticks_per_beat
    return Note(start, span.pitch, end, span.velocity, program, span.channel == DRUM_CHANNEL)


def _tempo_map(tracks: list[_TimedTrack], timing: _Timing, resets_per_track: bool) -> tuple[Tempo, ...]:
    """Tempo changes from every track, the last one winning at a tick, repeats dropped."""
    if not timing.follows_tempo:
        return (Tempo(0.0),)
    changes = [(0, DEFAULT_MICROSECONDS_PER_BEAT)]
    for track in tracks:
        if resets_per_track:
            changes.append((track.start, DEFAULT_MICROSECONDS_PER_BEAT))
        tempos = [(tick, message.tempo) for tick, message in track.events if message.type == "set_tempo"]
        changes += [(tick, tempo) for tick, tempo in tempos if tempo > 0]
    at_tick = dict(sorted(changes, key=lambda change: change[0]))
    kept: list[tuple[int, int]] = []
    for tick, tempo in at_tick.items():
        if not kept or kept[-1][1] != tempo:
            kept.append((tick, tempo))
    return tuple(Tempo(tick / timing.ticks_per_beat, tempo) for tick, tempo in kept)


def _time_signature(tracks: list[_TimedTrack]) -> tuple[int, int]:
    """The first usable time signature of the piece, 4/4 if there is none."""
    signatures = [
        (tick, message.numerator, message.denominator)
        for track in tracks
        for tick, message in track.events
        if message.type == "time_signature" and message.numerator > 0 and message.denominator <= 64
    ]
    if not signatures:
        return (4, 4)
    _, numerator, denominator = min(signatures, key=lambda signature: signature[0])
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
