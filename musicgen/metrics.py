"""Style measures of a piece, after MusPy (Dong et al. 2020) and Yang & Lerch (2018); our own code.

Every measure reads the melodic notes only (drums have no pitch) and times in beats
(quarter notes), so tempo does not change them. The piece's length runs from beat 0 to the
end of its last note. A piece without melodic notes cannot be measured: `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np

from musicgen.score import Note, Score

PITCH_CLASS_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALE_STEPS = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}  # natural minor
# Krumhansl & Kessler (1982) key profiles, from the tonic upwards, for `key_of`.
KEY_PROFILES = {
    "major": (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88),
    "minor": (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17),
}
EDGE = 1e-9  # beats; a note ending this close after a beat line does not sound in the next beat


@dataclass(frozen=True)
class Key:
    """A major or minor key."""

    tonic: int  # pitch class 0..11, 0 = C
    mode: str  # "major" or "minor"

    @property
    def name(self) -> str:
        """For example 'F# minor'."""
        return f"{PITCH_CLASS_NAMES[self.tonic]} {self.mode}"

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        """The seven pitch classes of its scale (natural minor for minor keys), from the tonic."""
        return tuple((self.tonic + step) % 12 for step in SCALE_STEPS[self.mode])


@dataclass(frozen=True)
class StyleMeasures:
    """Summary numbers of a piece's style (or the mean over a corpus, from `corpus_style`)."""

    pitch_class_histogram: tuple[float, ...]  # 12 shares of the notes, C..B, sum 1; each note counts once
    pitch_class_entropy: float  # bits, 0 (one pitch class) .. log2(12) = 3.58 (all equally often)
    scale_consistency: float  # 0..1, share of notes in the best-fitting major or natural minor scale
    pitch_range: float  # semitones from the lowest to the highest note
    polyphony: float  # >= 1, mean number of pitches sounding, over the time when any sounds
    notes_per_beat: float  # notes started per beat (quarter note) over the piece's length
    empty_beat_share: float  # 0..1, share of beats in which no note sounds

    def as_dict(self) -> dict[str, float]:
        """The scalar measures by name (the histogram left out), e.g. for a table."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pitch_class_histogram"}


def measure_style(score: Score) -> StyleMeasures:
    """Every style measure of one piece."""
    histogram = pitch_class_histogram(score)
    return StyleMeasures(
        pitch_class_histogram=tuple(float(share) for share in histogram),
        pitch_class_entropy=entropy_bits(histogram),
        scale_consistency=scale_consistency(score),
        pitch_range=float(pitch_range(score)),
        polyphony=polyphony(score),
        notes_per_beat=notes_per_beat(score),
        empty_beat_share=empty_beat_share(score),
    )


def corpus_style(scores: Iterable[Score]) -> StyleMeasures:
    """The mean of each measure over the pieces, with the histogram pooled over all their notes.

    Pieces without melodic notes (drums only) are left out. The entropy is the mean of the
    pieces' entropies, not the entropy of the pooled histogram.
    """
    playable = [score for score in scores if score.melodic_notes]
    if not playable:
        raise ValueError("none of the pieces has notes to measure")
    pooled = sum(_pitch_class_counts(_melodic_notes(score)) for score in playable)
    measures = [measure_style(score).as_dict() for score in playable]
    means = {name: float(np.mean([m[name] for m in measures])) for name in measures[0]}
    histogram = tuple(float(share) for share in pooled / pooled.sum())
    return StyleMeasures(pitch_class_histogram=histogram, **means)


def style_distance(first: StyleMeasures, second: StyleMeasures) -> dict[str, float]:
    """How far apart two styles are, measure by measure.

    The histograms are compared by Jensen-Shannon divergence (0 = same, 1 = no pitch class
    in common); every other measure by the absolute difference, in its own unit.
    """
    histograms = histogram_distance(first.pitch_class_histogram, second.pitch_class_histogram)
    first_values, second_values = first.as_dict(), second.as_dict()
    differences = {name: abs(first_values[name] - second_values[name]) for name in first_values}
    return {"pitch_class_histogram": histograms} | differences


def pitch_class_histogram(score: Score) -> np.ndarray:
    """Share of the notes on each pitch class C..B, shape (12,); notes are counted, not weighted by length."""
    counts = _pitch_class_counts(_melodic_notes(score))
    return counts / counts.sum()


def histogram_distance(first: Iterable[float], second: Iterable[float]) -> float:
    """Jensen-Shannon divergence in bits between two histograms: 0 when equal, 1 when disjoint."""
    p, q = _normalised(first), _normalised(second)
    middle = (p + q) / 2
    return max(0.0, entropy_bits(middle) - (entropy_bits(p) + entropy_bits(q)) / 2)


def entropy_bits(histogram: Iterable[float]) -> float:
    """Shannon entropy in bits of a normalised histogram."""
    shares = np.asarray(histogram, float)
    shares = shares[shares > 0]
    return float(-(shares * np.log2(shares)).sum())


def scale_consistency(score: Score) -> float:
    """Largest share of notes inside one of the 24 major and natural minor scales, 0..1."""
    counts = _pitch_class_counts(_melodic_notes(score))
    return max(float(counts[list(key.pitch_classes)].sum() / counts.sum()) for key in _all_keys())


def pitch_range(score: Score) -> int:
    """Semitones from the lowest to the highest note."""
    pitches = [note.pitch for note in _melodic_notes(score)]
    return max(pitches) - min(pitches)


def polyphony(score: Score) -> float:
    """Mean number of distinct pitches sounding, over the time in which at least one sounds.

    Computed exactly from the note times (no grid): total sounding time of each pitch, over
    the time in which anything sounds. A melody gives 1, held triads give 3.
    """
    notes = _melodic_notes(score)
    pitches = np.array([note.pitch for note in notes])
    intervals = np.array([(note.start, note.end) for note in notes])
    per_pitch = sum(_covered_length(intervals[pitches == pitch]) for pitch in np.unique(pitches))
    return per_pitch / _covered_length(intervals)


def notes_per_beat(score: Score) -> float:
    """Notes started per beat (quarter note) over the piece's length."""
    notes = _melodic_notes(score)
    return len(notes) / max(note.end for note in notes)


def empty_beat_share(score: Score) -> float:
    """Share of the beats (quarter notes, from beat 0 to the last note's end) in which no note sounds."""
    notes = _melodic_notes(score)
    first_beats = np.array([math.floor(note.start + EDGE) for note in notes])
    end_beats = np.array([math.ceil(note.end - EDGE) for note in notes])  # exclusive
    beat_count = int(end_beats.max())
    change = np.zeros(beat_count + 1)
    np.add.at(change, first_beats, 1)
    np.add.at(change, end_beats, -1)
    sounding = np.cumsum(change)[:beat_count] > 0
    return float(1 - sounding.mean())


def key_of(score: Score) -> Key:
    """The most likely major or minor key (Krumhansl-Schmuckler: note lengths per pitch class
    correlated with the Krumhansl-Kessler profiles). Ties go to the first of C major, C minor,
    C# major..., so music that favours no pitch class comes out as C major."""
    weights = np.zeros(12)
    for note in _melodic_notes(score):
        weights[note.pitch % 12] += note.duration
    centred = weights - weights.mean()
    return max(_all_keys(), key=lambda key: _correlation_without_scale(centred, key))


def _correlation_without_scale(centred_weights: np.ndarray, key: Key) -> float:
    """Correlation of the weights with the key's profile, times the weights' (shared) spread."""
    profile = np.roll(np.array(KEY_PROFILES[key.mode]), key.tonic)
    centred_profile = profile - profile.mean()
    return float(centred_weights @ centred_profile / np.linalg.norm(centred_profile))


def _all_keys() -> list[Key]:
    return [Key(tonic, mode) for tonic in range(12) for mode in ("major", "minor")]


def _melodic_notes(score: Score) -> tuple[Note, ...]:
    notes = score.melodic_notes
    if not notes:
        raise ValueError("the piece has no notes to measure (drums are left out)")
    return notes


def _pitch_class_counts(notes: Iterable[Note]) -> np.ndarray:
    return np.bincount([note.pitch % 12 for note in notes], minlength=12).astype(float)


def _normalised(histogram: Iterable[float]) -> np.ndarray:
    values = np.asarray(histogram, float)
    if values.shape != (12,) or (values < 0).any() or values.sum() <= 0:
        raise ValueError("a pitch-class histogram must have 12 non-negative values that are not all 0")
    return values / values.sum()


def _covered_length(intervals: np.ndarray) -> float:
    """Length of the union of (start, end) intervals, shape (n, 2)."""
    ordered = intervals[np.argsort(intervals[:, 0])]
    starts, ends = ordered[:, 0], ordered[:, 1]
    reached = np.maximum.accumulate(ends)  # furthest end among the intervals so far
    covered_from = np.maximum(starts, np.concatenate([[-np.inf], reached[:-1]]))
    return float(np.clip(ends - covered_from, 0, None).sum())
