"""Score <-> token ids: an event vocabulary that keeps chords, rhythm and loudness.

A piece becomes `start`, then for every onset on the beat grid: the time since the
previous onset (`shift_k`, k grid steps; longer gaps chain several shifts), and for each
note starting there, in ascending pitch: `velocity_v` (only when the loudness changes),
`pitch_p` and its length (`duration_k`; longer notes chain several durations, which add
up). The piece ends with `end`. A chord therefore costs one shift for all of its notes,
which keeps the average near 2.5 tokens per note.

Times snap to the nearest grid step (16th notes by default): a triplet eighth lands on
the nearest 16th, so triplets come back as uneven 16ths; any off-grid note moves to its
nearest step and lasts at least one step. Velocities snap to the middle of their bin.
Drums are left out unless `include_drums` is set, and tokens carry no instrument or tempo:
`decode` takes both as arguments. With `instruments` set, a note of another General MIDI
program than the one before it is preceded by `program_n` (0..127; the notes of an onset go
instrument by instrument, so a chord of one instrument costs one such token at most, and a
piece for piano none), and drums keep their own keys as `drum_k` (their sounds, not pitches:
they are never transposed nor held to a key). Their ids come after all the others, so a
vocabulary without them keeps its ids.

Long silences and held notes chain many tokens, so `encode` refuses a piece over
MAX_PIECE_TOKENS; `count_tokens` says how many a piece makes without making them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import cached_property
from itertools import groupby

import numpy as np

from musicgen.score import DEFAULT_MICROSECONDS_PER_BEAT, Note, Score, Tempo
from musicgen.validation import check_ranges

PAD, START, END = 0, 1, 2
SPECIAL_NAMES = ("pad", "start", "end")
DEFAULT_VELOCITY = 80
# Most tokens in one piece. A file at musicgen.midi.MAX_NOTES (200,000 notes) at 3 tokens a
# note (the Bach chorales take 2.35) fits; as the Python list `encode` builds it takes 4.8 MB.
# Without it, a tiny file of a few notes held for 20,000 beats would make millions.
MAX_PIECE_TOKENS = 600_000


@dataclass(frozen=True)
class TokenConfig:
    """How a score is cut into tokens."""

    steps_per_beat: int = 4  # grid steps per quarter note, 1..48 (4 = 16th notes)
    max_shift_steps: int = 16  # longest single time shift, in grid steps, 1..256
    max_duration_steps: int = 32  # longest single duration token, in grid steps, 1..256
    velocity_bins: int = 8  # loudness levels, 1..32
    include_drums: bool = False  # keep drum notes (channel 10) in the tokens, as plain notes
    instruments: bool = False  # program_n tokens say the instrument of the notes after them; drums as drum_k

    def __post_init__(self) -> None:
        check_ranges(
            self, steps_per_beat=(1, 48), max_shift_steps=(1, 256), max_duration_steps=(1, 256), velocity_bins=(1, 32)
        )


@dataclass(frozen=True)
class Vocabulary:
    """The token names of one TokenConfig; saved beside every model as data."""

    config: TokenConfig = TokenConfig()

    @cached_property
    def names(self) -> tuple[str, ...]:
        """Every token name; a token id is its index here."""
        config = self.config
        return (
            *SPECIAL_NAMES,
            *(f"shift_{k}" for k in range(1, config.max_shift_steps + 1)),
            *(f"velocity_{v}" for v in self.velocity_values),
            *(f"pitch_{p}" for p in range(128)),
            *(f"duration_{k}" for k in range(1, config.max_duration_steps + 1)),
            *(f"{kind}_{n}" for kind in ("program", "drum") if config.instruments for n in range(128)),
        )

    def __len__(self) -> int:
        return len(self.names)

    @cached_property
    def velocity_values(self) -> tuple[int, ...]:
        """The loudness at the middle of each velocity bin."""
        width = 128 / self.config.velocity_bins
        return tuple(max(1, min(127, int(width * (i + 0.5)))) for i in range(self.config.velocity_bins))

    @cached_property
    def first_id(self) -> dict[str, int]:
        """Id of the first token of each kind (shift_1, velocity bin 0, pitch_0, duration_1)."""
        kinds = ("shift", "velocity", "pitch", "duration", "program", "drum")[: 6 if self.config.instruments else 4]
        return {kind: next(i for i, n in enumerate(self.names) if n.startswith(kind + "_")) for kind in kinds}

    @cached_property
    def pitch_of_id(self) -> np.ndarray:
        """MIDI pitch of each id, -1 for ids that are not pitches."""
        return self._value_table("pitch")

    @cached_property
    def drum_of_id(self) -> np.ndarray:
        """Drum key of each id, -1 for ids that are not drums."""
        return self._value_table("drum")

    @cached_property
    def program_of_id(self) -> np.ndarray:
        """General MIDI program of each id, -1 for ids that are not programs."""
        return self._value_table("program")

    @cached_property
    def is_note_id(self) -> np.ndarray:
        """True for the ids that start a note: pitches and drums."""
        return (self.pitch_of_id >= 0) | (self.drum_of_id >= 0)

    @property
    def keeps_drums(self) -> bool:
        """Whether drum notes are part of the tokens."""
        return self.config.include_drums or self.config.instruments

    @cached_property
    def shift_steps_of_id(self) -> np.ndarray:
        """Grid steps each id moves time forward (0 for ids that are not shifts)."""
        return np.maximum(self._value_table("shift"), 0)

    def _value_table(self, kind: str) -> np.ndarray:
        prefix = kind + "_"
        return np.array([int(n[len(prefix) :]) if n.startswith(prefix) else -1 for n in self.names], np.int64)

    def transpose_table(self, semitones: int) -> np.ndarray:
        """Id -> id map that shifts every pitch by `semitones`, clamped to 0..127."""
        table = np.arange(len(self), dtype=np.int64)
        is_pitch = self.pitch_of_id >= 0
        moved = np.clip(self.pitch_of_id[is_pitch] + semitones, 0, 127)
        table[is_pitch] = self.first_id["pitch"] + moved
        return table

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return {"config": asdict(self.config), "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Rebuild from `to_dict` output, checking the names match the settings."""
        try:
            vocabulary = cls(TokenConfig(**data["config"]))
            names = tuple(data["names"])
        except (KeyError, TypeError) as error:
            raise ValueError(f"the vocabulary file is incomplete or malformed ({error})") from None
        if names != vocabulary.names:
            raise ValueError("the vocabulary file does not match its own settings: it was edited or is damaged")
        return vocabulary


def quantize(score: Score, vocabulary: Vocabulary = Vocabulary()) -> Score:
    """The score as the tokens see it: on the grid, binned loudness, drums dropped unless kept, and without
    instrument tokens every note on program 0 (kept drums as plain notes)."""
    config = vocabulary.config
    notes = [
        _snap(note, config, vocabulary.velocity_values)
        for note in score.notes
        if vocabulary.keeps_drums or not note.is_drum
    ]
    return Score(tuple(notes), score.tempos, score.time_signature, score.ticks_per_beat)


def _snap(note: Note, config: TokenConfig, velocity_values: tuple[int, ...]) -> Note:
    start = round(note.start * config.steps_per_beat)
    end = max(round(note.end * config.steps_per_beat), start + 1)
    is_drum = note.is_drum and config.instruments
    program = note.program if config.instruments and not is_drum else 0
    velocity = _nearest_velocity(note.velocity, velocity_values)
    return Note(start / config.steps_per_beat, note.pitch, end / config.steps_per_beat, velocity, program, is_drum)


def _instrument_order(note: Note) -> tuple:
    """Order of the notes of one onset in the tokens: instrument by instrument, drums last, pitch upwards."""
    return note.is_drum, note.program, note.pitch, note.end, note.velocity


def _nearest_velocity(velocity: int, velocity_values: tuple[int, ...]) -> int:
    return min(velocity_values, key=lambda value: (abs(value - velocity), value))


def encode(score: Score, vocabulary: Vocabulary = Vocabulary()) -> list[int]:
    """Token ids of a score, from `start` to `end`; ValueError for a piece over MAX_PIECE_TOKENS."""
    count = count_tokens(score, vocabulary)
    if count > MAX_PIECE_TOKENS:
        raise ValueError(f"this piece would make {count:,} tokens; the limit for one piece is {MAX_PIECE_TOKENS:,}")
    ids, names = [START], {name: i for i, name in enumerate(vocabulary.names)}
    config, previous_step, velocity, program = vocabulary.config, 0, None, 0
    on_grid = quantize(score, vocabulary).notes
    for step, chord in groupby(on_grid, key=lambda note: round(note.start * config.steps_per_beat)):
        ids += _chained(names, "shift", step - previous_step, config.max_shift_steps)
        for note in sorted(chord, key=_instrument_order):
            if note.program != program:
                ids.append(names[f"program_{note.program}"])
                program = note.program
            if note.velocity != velocity:
                ids.append(names[f"velocity_{note.velocity}"])
                velocity = note.velocity
            ids.append(names[f"{'drum' if note.is_drum else 'pitch'}_{note.pitch}"])
            length = round(note.end * config.steps_per_beat) - step
            ids += _chained(names, "duration", length, config.max_duration_steps)
        previous_step = step
    return ids + [END]


def count_tokens(score: Score, vocabulary: Vocabulary = Vocabulary()) -> int:
    """How many ids `encode` makes of a score, counted from the grid steps without making them."""
    config = vocabulary.config
    kept = [note for note in score.notes if vocabulary.keeps_drums or not note.is_drum]
    velocities = {v: _nearest_velocity(v, vocabulary.velocity_values) for v in {note.velocity for note in kept}}
    on_grid = sorted(_grid_steps(note, config, velocities) for note in kept)  # the order `encode` gives
    count, previous_step, velocity, program = 2 + len(on_grid), 0, None, 0  # start, end and a pitch a note
    for start, _, note_program, _, end, note_velocity in on_grid:
        if start != previous_step:
            count += _chain_length(start - previous_step, config.max_shift_steps)
            previous_step = start
        if note_program != program:
            count, program = count + 1, note_program
        if note_velocity != velocity:
            count, velocity = count + 1, note_velocity
        count += _chain_length(end - start, config.max_duration_steps)
    return count


def _grid_steps(note: Note, config: TokenConfig, velocities: dict[int, int]) -> tuple[int, bool, int, int, int, int]:
    """(start step, is drum, program, pitch, end step, binned velocity) of a note, snapped as `quantize` snaps it."""
    start = round(note.start * config.steps_per_beat)
    end = max(round(note.end * config.steps_per_beat), start + 1)
    is_drum = note.is_drum and config.instruments
    program = note.program if config.instruments and not is_drum else 0
    return start, is_drum, program, note.pitch, end, velocities[note.velocity]


def _chain_length(steps: int, longest: int) -> int:
    """How many tokens `_chained` makes for `steps`."""
    full, rest = divmod(steps, longest)
    return max(full, 0) + (1 if rest else 0)


def _chained(names: dict[str, int], kind: str, steps: int, longest: int) -> list[int]:
    """Tokens of one kind whose step counts add up to `steps`."""
    full, rest = divmod(steps, longest)
    return [names[f"{kind}_{longest}"]] * full + ([names[f"{kind}_{rest}"]] if rest else [])


def decode(
    ids: Iterable[int],
    vocabulary: Vocabulary = Vocabulary(),
    program: int | None = None,
    microseconds_per_beat: int = DEFAULT_MICROSECONDS_PER_BEAT,
) -> Score:
    """A score from any id sequence: unknown ids are skipped, a pitch with no duration is
    dropped, a duration with no pitch is ignored, and everything after `end` is cut.

    program: the instrument of every note but the drums; None plays each as its tokens say (0 if they say nothing).
    """
    names, steps_per_beat = vocabulary.names, vocabulary.config.steps_per_beat
    notes, step, velocity = [], 0, _nearest_velocity(DEFAULT_VELOCITY, vocabulary.velocity_values)
    pitch, is_drum, length, written = None, False, 0, 0  # the note being read, its length so far; the program

    def finish_note() -> None:
        if pitch is not None and length > 0:
            instrument = 0 if is_drum else written if program is None else program
            start, end = step / steps_per_beat, (step + length) / steps_per_beat
            notes.append(Note(start, pitch, end, velocity, instrument, is_drum))

    for token_id in ids:
        name = names[token_id] if 0 <= token_id < len(names) else "pad"
        kind, _, value = name.partition("_")
        if kind == "duration" and pitch is not None:
            length += int(value)
            continue
        if kind == "duration":
            continue
        finish_note()
        pitch, length = None, 0
        if kind == "end":
            break
        if kind == "shift":
            step += int(value)
        elif kind == "velocity":
            velocity = int(value)
        elif kind == "program":
            written = int(value)
        elif kind in ("pitch", "drum"):
            pitch, is_drum = int(value), kind == "drum"
    finish_note()
    return Score(tuple(notes), (Tempo(0.0, microseconds_per_beat),))
