"""Figures of a piece and of training; the app shows them, this module never imports streamlit.

The piano roll is plain SVG in a little HTML: light to send and to draw, with no script, so a
browser shows it at once even while it is busy with other pages. Training curves are Plotly
figures, drawn in one or two traces whatever their length.
"""

from __future__ import annotations

import html
from collections.abc import Collection
from dataclasses import dataclass

import plotly.graph_objects as go

from musicgen.score import Note, Score

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # spelt as the key names
QUIET_COLOUR, LOUD_COLOUR = (158, 202, 225), (8, 48, 107)  # velocity 1 -> light blue, 127 -> dark blue
PRIMER_COLOUR = "#f58518"  # orange, apart from every loudness colour
PART_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
EVERY_NOTE_NAMED_UP_TO = 24  # name every pitch on the axis when the piece spans at most this many semitones
ROLL_WIDTH = 1000  # SVG units across; the browser scales the drawing to the page's width
ROW_HEIGHT = 7  # SVG units per semitone, within ROLL_HEIGHTS
ROLL_HEIGHTS = (160, 420)  # the drawing area's height, whatever the range of pitches
LEFT, RIGHT, TOP, BOTTOM = 44, 18, 6, 26  # margins around the drawing area, for the axes' labels
NOTE_THICKNESS = 0.8  # bar height in rows
TIME_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600)  # seconds between the time axis's labels


def pitch_to_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI key: 60 -> 'C4', 61 -> 'C#4'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


# The piece.


def piano_roll(score: Score, primer_notes: int | Collection[Note] = 0, title: str = "") -> str:
    """HTML of a piano roll: an SVG of notes as bars, time in seconds across and pitch up, then its legend.

    The primer is orange; each instrument has its colour when several play, else a note is darker when
    louder. Each bar names its note, instrument, start, length and loudness when the pointer rests on it.
    `primer_notes` is either how many notes, from the first in time order, are the user's opening, or
    those notes themselves.
    """
    heading = f'<p style="font-weight:600;margin:0">{html.escape(title)}</p>' if title else ""
    if not score.notes:
        return f'<div class="piano-roll">{heading}<p>no notes</p></div>'
    primer = set(score.notes[:primer_notes]) if isinstance(primer_notes, int) else set(primer_notes)
    generated = [note for note in score.notes if note not in primer]
    frame = _Frame.around(score)
    parts = _parts(generated)
    bars, legend = [], []
    if len(parts) == 1:
        bars += [_bar(frame, score, note, _loudness_colour(note.velocity)) for note in generated]
        legend.append(LOUDNESS_KEY)
    for number, (instrument, notes) in enumerate(parts.items() if len(parts) > 1 else ()):
        colour = PART_COLOURS[number % len(PART_COLOURS)]
        bars += [_bar(frame, score, note, colour) for note in notes]
        legend.append(_key(instrument, colour))
    if primer:
        bars += [_bar(frame, score, note, PRIMER_COLOUR) for note in score.notes if note in primer]
        legend.append(_key("your opening", PRIMER_COLOUR))
    drawing = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {ROLL_WIDTH} {frame.height}" width="100%" '
        f'role="img" aria-label="piano roll" style="font:12px sans-serif">'
        f"{''.join(_axes(frame))}{''.join(bars)}</svg>"
    )
    keys = f'<div style="display:flex;gap:1.2em;flex-wrap:wrap;font-size:0.85em">{"".join(legend)}</div>'
    return f'<div class="piano-roll">{heading}{drawing}{keys}</div>'


@dataclass(frozen=True)
class _Frame:
    """Where seconds and pitches land in the SVG."""

    seconds: float  # the time axis's length
    low: int  # lowest pitch shown
    high: int  # highest pitch shown

    @classmethod
    def around(cls, score: Score) -> _Frame:
        pitches = [note.pitch for note in score.notes]
        end = max(score.beat_to_seconds(note.end) for note in score.notes)
        return cls(max(end, 1e-3), min(pitches) - 1, max(pitches) + 1)

    @property
    def row(self) -> float:
        """SVG units per semitone."""
        rows = self.high - self.low + 1
        return min(max(rows * ROW_HEIGHT, ROLL_HEIGHTS[0]), ROLL_HEIGHTS[1]) / rows

    @property
    def height(self) -> float:
        return TOP + self.row * (self.high - self.low + 1) + BOTTOM

    def x(self, seconds: float) -> float:
        return LEFT + seconds / self.seconds * (ROLL_WIDTH - LEFT - RIGHT)

    def y(self, pitch: float) -> float:
        """The top of the pitch's row."""
        return TOP + (self.high - pitch) * self.row


def _bar(frame: _Frame, score: Score, note: Note, colour: str) -> str:
    start, end = score.beat_to_seconds(note.start), score.beat_to_seconds(note.end)
    left, top = frame.x(start), frame.y(note.pitch) + frame.row * (1 - NOTE_THICKNESS) / 2
    about = (
        f"{pitch_to_name(note.pitch)} {note.instrument.lower()}, start {start:.2f} s, "
        f"length {end - start:.2f} s, loudness {note.velocity}"
    )
    return (
        f'<rect class="note" x="{left:.1f}" y="{top:.1f}" width="{max(frame.x(end) - left, 0.5):.1f}" '
        f'height="{frame.row * NOTE_THICKNESS:.1f}" fill="{colour}" stroke="white" stroke-width="0.5">'
        f"<title>{html.escape(about)}</title></rect>"
    )


def _axes(frame: _Frame) -> list[str]:
    """Pitch names with a faint line across, and seconds along the bottom."""
    bottom = frame.y(frame.low - 1)
    step = 1 if frame.high - frame.low <= EVERY_NOTE_NAMED_UP_TO + 2 else 12  # 12: only the Cs
    marks = []
    for pitch in range(frame.low + 1, frame.high):
        if step == 1 or pitch % 12 == 0:
            middle = frame.y(pitch) + frame.row / 2
            marks.append(_line(LEFT, ROLL_WIDTH - RIGHT, middle, middle))
            marks.append(_label("pitch", LEFT - 4, middle + 4, "end", pitch_to_name(pitch)))
    every = next((seconds for seconds in TIME_STEPS if frame.seconds / seconds <= 10), TIME_STEPS[-1])
    for number in range(int(frame.seconds // every) + 1):
        x = frame.x(number * every)
        marks.append(_line(x, x, TOP, bottom))
        marks.append(_label("time", x, bottom + 16, "middle", f"{number * every} s"))
    return marks


def _line(x1: float, x2: float, y1: float, y2: float) -> str:
    return f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="#eee"/>'


def _label(kind: str, x: float, y: float, anchor: str, text: str) -> str:
    return f'<text class="{kind}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{text}</text>'


def _loudness_colour(velocity: int) -> str:
    share = (velocity - 1) / 126
    red, green, blue = (
        round(quiet + (loud - quiet) * share) for quiet, loud in zip(QUIET_COLOUR, LOUD_COLOUR, strict=True)
    )
    return f"#{red:02x}{green:02x}{blue:02x}"


def _key(name: str, colour: str) -> str:
    swatch = (
        f'<span style="display:inline-block;width:0.9em;height:0.9em;background:{colour};margin-right:0.3em"></span>'
    )
    return f"<span>{swatch}{html.escape(name)}</span>"


LOUDNESS_KEY = (
    '<span>quiet <span style="display:inline-block;width:4em;height:0.9em;vertical-align:middle;'
    f'background:linear-gradient(to right,{_loudness_colour(1)},{_loudness_colour(127)})"></span> loud</span>'
)


def _parts(notes: list[Note]) -> dict[str, list[Note]]:
    """The notes of each instrument, by its name, in the order the instruments first play."""
    parts: dict[str, list[Note]] = {}
    for note in notes:
        parts.setdefault(note.instrument, []).append(note)
    return parts


# Training.


def loss_curve(history: list[dict]) -> go.Figure:
    """Training and validation loss per epoch; each entry has epoch, loss, validation_loss, seconds."""
    figure = go.Figure(
        layout=go.Layout(
            xaxis=dict(title=dict(text="epoch")),
            yaxis=dict(title=dict(text="loss (lower is better)")),
            legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
            margin=dict(l=60, r=20, t=30, b=50),
        )
    )
    if not history:
        return _with_note(figure, "no training yet")
    figure.add_trace(_loss_line(history, "loss", "training"))
    if any(entry.get("validation_loss") is not None for entry in history):
        figure.add_trace(_loss_line(history, "validation_loss", "validation"))
    return figure


def _loss_line(history: list[dict], key: str, name: str) -> go.Scatter:
    """One loss per epoch; epochs without a value are left out."""
    entries = [entry for entry in history if entry.get(key) is not None]
    return go.Scatter(
        name=name,
        mode="lines+markers",
        x=[entry["epoch"] for entry in entries],
        y=[entry[key] for entry in entries],
        customdata=[entry["seconds"] for entry in entries],
        hovertemplate=name + "<br>epoch %{x}<br>loss %{y:.4f}<br>took %{customdata:.1f} s<extra></extra>",
    )


def _with_note(figure: go.Figure, text: str) -> go.Figure:
    """The figure with `text` in the middle of its empty plot area."""
    figure.add_annotation(text=text, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False)
    figure.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    figure.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    return figure
