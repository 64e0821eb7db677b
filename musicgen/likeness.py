"""How close a model's pieces are to the music it was taught, in plain terms a visitor can read.

The same measures as musicgen.metrics (pitch classes, notes at once, notes per beat, pitch range),
for a few pieces the model composes against the uploaded music, and against the music of the
model it started from when there is one: a model that learned the uploads composes closer to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from musicgen.metrics import StyleMeasures, corpus_style, histogram_distance
from musicgen.score import Score

PIECES = 6  # composed to measure a model
PIECE_SECONDS = 30.0
TEMPERATURE = 0.9
MEASURES = (  # (StyleMeasures field, plain name, unit) shown side by side
    ("polyphony", "notes sounding at once", ""),
    ("notes_per_beat", "notes per beat", ""),
    ("pitch_range", "pitch range", " semitones"),
)


@dataclass(frozen=True)
class Likeness:
    """The style of a model's pieces beside that of the music it was taught (and of its starting model's)."""

    composed: StyleMeasures
    taught: StyleMeasures
    base: StyleMeasures | None = None  # the music of the model training started from
    base_name: str = ""  # e.g. "Bach chorales"

    def sentences(self) -> list[str]:
        """One line per measure, then one on the pitch classes."""
        lines = []
        for field, name, unit in MEASURES:
            composed, taught = getattr(self.composed, field), getattr(self.taught, field)
            base = f", {self.base_name} {getattr(self.base, field):.1f}" if self.base else ""
            lines.append(f"{name.capitalize()}: {composed:.1f}{unit} (your music {taught:.1f}{base}).")
        return lines + [self._pitch_sentence()]

    def _pitch_sentence(self) -> str:
        to_taught = histogram_distance(self.composed.pitch_class_histogram, self.taught.pitch_class_histogram)
        if self.base is None:
            return f"Pitch classes: {_closeness(to_taught)} to your music (difference {to_taught:.3f})."
        to_base = histogram_distance(self.composed.pitch_class_histogram, self.base.pitch_class_histogram)
        nearer = "your music" if to_taught <= to_base else self.base_name
        differences = f"{to_taught:.3f} from yours, {to_base:.3f} from {self.base_name}"
        return f"Pitch classes: closer to {nearer} (difference {differences})."


def _closeness(distance: float) -> str:
    """Plain words for a Jensen-Shannon divergence in bits."""
    return "very close" if distance < 0.02 else "close" if distance < 0.06 else "not yet close"


def measure_likeness(
    composed: Sequence[Score], taught: Sequence[Score], base: StyleMeasures | None = None, base_name: str = ""
) -> Likeness:
    """The likeness of composed pieces to the taught music (ValueError when either has no notes)."""
    return Likeness(corpus_style(composed), corpus_style(taught), base, base_name)
