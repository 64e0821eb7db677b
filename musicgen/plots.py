"""Plotly figures of a piece and of training; the app shows them, this module never imports streamlit.

Each figure draws all its notes or points in one or two traces, whatever their number,
so a piece of a few thousand notes stays quick to send and to draw.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from musicgen.score import Note, Score

NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")  # spelt as the key names
LOUDNESS_COLOURS = [[0.0, "#9ecae1"], [1.0, "#08306b"]]  # velocity 1 -> light blue, 127 -> dark blue
PRIMER_COLOUR = "#f58518"  # orange, apart from every loudness colour
PART_COLOURS = [colour for colour in plotly.colors.qualitative.Safe if colour != "rgb(221, 204, 119)"]  # not pale sand
NOTE_THICKNESS = 0.8  # bar height in semitones
NOTE_OUTLINE = dict(width=0.5, color="white")  # keeps repeated notes of one pitch apart
EVERY_NOTE_NAMED_UP_TO = 24  # name every pitch on the axis when the piece spans at most this many semitones


def pitch_to_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI key: 60 -> 'C4', 61 -> 'C#4'."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


# The piece.


def piano_roll(score: Score, primer_notes: int | Collection[Note] = 0, title: str = "") -> go.Figure:
    """Notes as bars: time in seconds across, pitch up, the primer in orange; one colour per instrument when
    several play, else darker when louder.

    `primer_notes` is either how many notes, from the first in time order, are the user's
    opening, or those notes themselves.
    """
    figure = go.Figure(layout=_roll_layout(score, title))
    if not score.notes:
        return _with_note(figure, "no notes")
    primer = set(score.notes[:primer_notes]) if isinstance(primer_notes, int) else set(primer_notes)
    generated = [note for note in score.notes if note not in primer]
    parts = _parts(generated)
    if len(parts) == 1:
        figure.add_trace(_note_bars(score, generated, "composed", _loudness_marker(generated)))
    for number, (instrument, notes) in enumerate(parts.items() if len(parts) > 1 else ()):
        colour = PART_COLOURS[number % len(PART_COLOURS)]
        figure.add_trace(_note_bars(score, notes, instrument, dict(color=colour, line=NOTE_OUTLINE)))
    if primer:
        opening = [note for note in score.notes if note in primer]
        figure.add_trace(_note_bars(score, opening, "your opening", dict(color=PRIMER_COLOUR, line=NOTE_OUTLINE)))
    figure.update_layout(showlegend=len(figure.data) > 1)
    return figure


def _parts(notes: list[Note]) -> dict[str, list[Note]]:
    """The notes of each instrument, by its name, in the order the instruments first play."""
    parts: dict[str, list[Note]] = {}
    for note in notes:
        parts.setdefault(note.instrument, []).append(note)
    return parts


def _note_bars(score: Score, notes: list[Note], name: str, marker: dict) -> go.Bar:
    """One horizontal bar per note, from its start to its end in seconds."""
    starts = np.array([score.beat_to_seconds(note.start) for note in notes])
    ends = np.array([score.beat_to_seconds(note.end) for note in notes])
    pitches = np.array([note.pitch for note in notes])
    return go.Bar(
        name=name,
        orientation="h",
        base=starts,
        x=ends - starts,
        y=pitches,
        width=NOTE_THICKNESS,
        marker=marker,
        hovertext=[_hover(note, start, end) for note, start, end in zip(notes, starts, ends, strict=True)],
        hovertemplate="%{hovertext}<extra></extra>",
    )


def _loudness_marker(notes: list[Note]) -> dict:
    """Bar colours from velocities on a fixed 1..127 scale, with a colour bar."""
    return dict(
        color=np.array([note.velocity for note in notes]),
        colorscale=LOUDNESS_COLOURS,
        cmin=1,
        cmax=127,
        colorbar=dict(title=dict(text="loudness"), thickness=12),
        line=NOTE_OUTLINE,
    )


def _hover(note: Note, start: float, end: float) -> str:
    return (
        f"<b>{pitch_to_name(note.pitch)}</b> {note.instrument.lower()}<br>start {start:.2f} s<br>"
        f"length {end - start:.2f} s<br>loudness {note.velocity}"
    )


def _roll_layout(score: Score, title: str) -> go.Layout:
    """Axes in seconds and note names, bars drawn over one another rather than side by side."""
    return go.Layout(
        title=dict(text=title),
        barmode="overlay",
        xaxis=dict(title=dict(text="time (seconds)"), rangemode="tozero"),
        yaxis=_pitch_axis([note.pitch for note in score.notes]),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
        margin=dict(l=60, r=20, t=60 if title else 30, b=50),
    )


def _pitch_axis(pitches: list[int]) -> dict:
    """A pitch axis with names: every pitch over a small range, else every C."""
    if not pitches:
        return dict(title=dict(text="pitch"), showticklabels=False)
    low, high = min(pitches), max(pitches)
    step = 1 if high - low <= EVERY_NOTE_NAMED_UP_TO else 12  # 12: only the Cs
    ticks = [pitch for pitch in range(low, high + 1) if step == 1 or pitch % 12 == 0]
    return dict(
        title=dict(text="pitch"),
        range=[low - 1, high + 1],
        tickvals=ticks,
        ticktext=[pitch_to_name(pitch) for pitch in ticks],
    )


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
