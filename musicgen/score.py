"""The plain data every stage passes along: notes in beats, with the tempo map beside them."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

DEFAULT_MICROSECONDS_PER_BEAT = 500_000  # 120 beats per minute, the MIDI default
PROGRAM_NAMES = (  # the General MIDI instruments, by program number counted from 0, eight to a family
    *("Grand piano", "Bright piano", "Electric grand piano", "Honky-tonk piano"),
    *("Electric piano 1", "Electric piano 2", "Harpsichord", "Clavinet"),
    *("Celesta", "Glockenspiel", "Music box", "Vibraphone", "Marimba", "Xylophone", "Tubular bells", "Dulcimer"),
    *("Drawbar organ", "Percussive organ", "Rock organ", "Church organ", "Reed organ", "Accordion", "Harmonica"),
    "Tango accordion",
    *("Nylon guitar", "Steel guitar", "Jazz guitar", "Clean electric guitar", "Muted guitar", "Overdriven guitar"),
    *("Distortion guitar", "Guitar harmonics"),
    *("Acoustic bass", "Finger bass", "Pick bass", "Fretless bass", "Slap bass 1", "Slap bass 2", "Synth bass 1"),
    "Synth bass 2",
    *("Violin", "Viola", "Cello", "Contrabass", "Tremolo strings", "Pizzicato strings", "Harp", "Timpani"),
    *("Strings 1", "Strings 2", "Synth strings 1", "Synth strings 2", "Choir aahs", "Voice oohs", "Synth voice"),
    "Orchestra hit",
    *("Trumpet", "Trombone", "Tuba", "Muted trumpet", "French horn", "Brass section", "Synth brass 1", "Synth brass 2"),
    *("Soprano sax", "Alto sax", "Tenor sax", "Baritone sax", "Oboe", "English horn", "Bassoon", "Clarinet"),
    *("Piccolo", "Flute", "Recorder", "Pan flute", "Blown bottle", "Shakuhachi", "Whistle", "Ocarina"),
    *("Square lead", "Sawtooth lead", "Calliope lead", "Chiff lead", "Charang lead", "Voice lead", "Fifths lead"),
    "Bass and lead",
    *("New age pad", "Warm pad", "Polysynth pad", "Choir pad", "Bowed pad", "Metallic pad", "Halo pad", "Sweep pad"),
    *("Rain", "Soundtrack", "Crystal", "Atmosphere", "Brightness", "Goblins", "Echoes", "Sci-fi"),
    *("Sitar", "Banjo", "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai"),
    *("Tinkle bell", "Agogo", "Steel drums", "Woodblock", "Taiko drum", "Melodic tom", "Synth drum", "Reverse cymbal"),
    *("Guitar fret noise", "Breath noise", "Seashore", "Bird tweet", "Telephone ring", "Helicopter", "Applause"),
    "Gunshot",
)


@dataclass(frozen=True, order=True)
class Note:
    """One sounding note; times are in beats (quarter notes) from the start of the piece."""

    start: float  # beats
    pitch: int  # MIDI key 0..127
    end: float  # beats, > start
    velocity: int = 80  # 1..127
    program: int = 0  # General MIDI program 0..127
    is_drum: bool = False  # played on MIDI channel 10

    @property
    def duration(self) -> float:
        """Length in beats."""
        return self.end - self.start

    @property
    def instrument(self) -> str:
        """The name of what plays it: 'Drums' or a General MIDI instrument such as 'Violin'."""
        return "Drums" if self.is_drum else PROGRAM_NAMES[self.program]


@dataclass(frozen=True, order=True)
class Tempo:
    """A tempo change at a point of the piece."""

    beat: float  # where the change happens, in beats
    microseconds_per_beat: int = DEFAULT_MICROSECONDS_PER_BEAT

    @property
    def bpm(self) -> float:
        """Beats per minute."""
        return 60_000_000 / self.microseconds_per_beat


@dataclass(frozen=True)
class Score:
    """A piece of music: notes sorted by start then pitch, a tempo map and a time signature."""

    notes: tuple[Note, ...] = ()
    tempos: tuple[Tempo, ...] = (Tempo(0.0),)
    time_signature: tuple[int, int] = (4, 4)  # numerator, denominator
    ticks_per_beat: int = 480
    track_count: int = field(default=1, compare=False)  # tracks holding notes in the file it was read from
    _tempo_starts: list[float] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tempos or self.tempos[0].beat != 0:
            object.__setattr__(self, "tempos", (Tempo(0.0), *self.tempos))
        object.__setattr__(self, "notes", tuple(sorted(self.notes)))
        object.__setattr__(self, "_tempo_starts", self._seconds_at_tempo_changes())

    def _seconds_at_tempo_changes(self) -> list[float]:
        seconds, starts = 0.0, [0.0]
        for previous, tempo in zip(self.tempos, self.tempos[1:], strict=False):
            seconds += (tempo.beat - previous.beat) * previous.microseconds_per_beat / 1e6
            starts.append(seconds)
        return starts

    def beat_to_seconds(self, beat: float) -> float:
        """Seconds from the start at which `beat` sounds, following the tempo map."""
        index = bisect.bisect_right([t.beat for t in self.tempos], beat) - 1
        tempo = self.tempos[max(index, 0)]
        return self._tempo_starts[max(index, 0)] + (beat - tempo.beat) * tempo.microseconds_per_beat / 1e6

    @property
    def end_beat(self) -> float:
        """Beat at which the last note ends (0 for an empty score)."""
        return max((note.end for note in self.notes), default=0.0)

    @property
    def duration_seconds(self) -> float:
        """Length of the piece in seconds."""
        return self.beat_to_seconds(self.end_beat)

    @property
    def melodic_notes(self) -> tuple[Note, ...]:
        """The notes that are not drums."""
        return tuple(note for note in self.notes if not note.is_drum)
