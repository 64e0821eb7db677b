"""musicgen.plots: the piano roll follows the tempo map, marks the primer, and never fails on nothing."""

import pytest

from musicgen.plots import loss_curve, piano_roll, pitch_to_name
from musicgen.score import Note, Score, Tempo


def two_tempo_piece() -> Score:
    """Beats 0..2 at 120 bpm (half a second each), then 60 bpm (a second each)."""
    notes = (
        Note(0.0, 60, 1.0, 40),  # 0.0 .. 0.5 s
        Note(1.0, 64, 1.5, 80),  # 0.5 .. 0.75 s
        Note(1.5, 67, 2.5, 100),  # 0.75 .. 1.5 s, across the tempo change
        Note(3.0, 72, 4.0, 127),  # 2.0 .. 3.0 s
    )
    return Score(notes, (Tempo(0.0, 500_000), Tempo(2.0, 1_000_000)))


@pytest.mark.parametrize("pitch, name", [(60, "C4"), (61, "C#4"), (70, "Bb4"), (21, "A0"), (0, "C-1"), (127, "G9")])
def test_pitch_to_name(pitch, name):
    assert pitch_to_name(pitch) == name


def test_piano_roll_draws_one_bar_per_note_in_seconds():
    figure = piano_roll(two_tempo_piece(), title="my piece")
    (bars,) = figure.data
    assert bars.type == "bar" and bars.orientation == "h"
    assert list(bars.base) == pytest.approx([0.0, 0.5, 0.75, 2.0])
    assert list(bars.x) == pytest.approx([0.5, 0.25, 0.75, 1.0])  # durations
    assert list(bars.y) == [60, 64, 67, 72]
    assert figure.layout.barmode == "overlay"  # bars at one pitch must not be pushed aside
    assert figure.layout.title.text == "my piece"
    assert figure.layout.xaxis.title.text == "time (seconds)"


def test_piano_roll_colours_by_loudness_and_explains_each_note_on_hover():
    (bars,) = piano_roll(two_tempo_piece()).data
    assert list(bars.marker.color) == [40, 80, 100, 127]
    assert bars.marker.colorbar.title.text == "loudness"
    assert "C4" in bars.hovertext[0] and "start 0.00 s" in bars.hovertext[0]
    assert "length 0.75 s" in bars.hovertext[2] and "loudness 100" in bars.hovertext[2]


def test_piano_roll_names_the_pitches_on_the_axis():
    axis = piano_roll(two_tempo_piece()).layout.yaxis
    assert "C4" in axis.ticktext and "C5" in axis.ticktext
    assert dict(zip(axis.tickvals, axis.ticktext, strict=True))[60] == "C4"


def test_a_wide_piece_names_only_the_cs():
    score = Score((Note(0.0, 30, 1.0), Note(1.0, 90, 2.0)))
    assert piano_roll(score).layout.yaxis.ticktext == ("C2", "C3", "C4", "C5", "C6")


@pytest.mark.parametrize(
    "primer",
    [2, {Note(0.0, 60, 1.0, 40), Note(1.0, 64, 1.5, 80)}],
    ids=["first notes", "explicit notes"],
)
def test_the_primer_is_drawn_apart_with_a_legend_entry(primer):
    figure = piano_roll(two_tempo_piece(), primer_notes=primer)
    composed, opening = figure.data
    assert opening.name == "your opening" and figure.layout.showlegend
    assert list(opening.y) == [60, 64] and list(opening.base) == pytest.approx([0.0, 0.5])
    assert list(composed.y) == [67, 72]
    assert isinstance(opening.marker.color, str)  # one colour, apart from the loudness scale
    assert list(composed.marker.color) == [100, 127]


def test_a_piece_that_is_all_primer_has_no_empty_trace():
    figure = piano_roll(two_tempo_piece(), primer_notes=10)
    assert [trace.name for trace in figure.data] == ["your opening"]


def test_an_empty_score_gives_an_empty_figure_that_says_so():
    figure = piano_roll(Score(), primer_notes=3, title="nothing")
    assert len(figure.data) == 0
    assert [annotation.text for annotation in figure.layout.annotations] == ["no notes"]
    figure.to_json()


def test_piano_roll_of_many_notes_stays_light():
    notes = tuple(Note(i / 4, 40 + i % 48, i / 4 + 0.5, 1 + i % 127) for i in range(2000))
    figure = piano_roll(Score(notes), primer_notes=100)
    assert len(figure.data) == 2
    assert len(figure.to_json()) < 400_000  # about 150 bytes a note


# Training.


def history(validation: bool = True) -> list[dict]:
    return [
        dict(epoch=epoch, loss=3.0 / epoch, validation_loss=3.2 / epoch if validation else None, seconds=1.5)
        for epoch in (1, 2, 3)
    ]


def test_loss_curve_draws_training_and_validation_per_epoch():
    figure = loss_curve(history())
    training, validation = figure.data
    assert (training.name, validation.name) == ("training", "validation")
    assert list(training.x) == [1, 2, 3] and list(training.y) == pytest.approx([3.0, 1.5, 1.0])
    assert list(validation.y) == pytest.approx([3.2, 1.6, 3.2 / 3])
    assert figure.layout.xaxis.title.text == "epoch"
    assert figure.layout.yaxis.title.text == "loss (lower is better)"


def test_loss_curve_without_validation_draws_one_line():
    assert [trace.name for trace in loss_curve(history(validation=False)).data] == ["training"]


def test_loss_curve_skips_epochs_without_validation():
    entries = history()
    entries[1]["validation_loss"] = None
    assert list(loss_curve(entries).data[1].x) == [1, 3]


def test_loss_curve_of_no_history_says_so():
    figure = loss_curve([])
    assert len(figure.data) == 0
    assert figure.layout.annotations[0].text == "no training yet"


def test_several_instruments_get_a_colour_and_a_legend_entry_each():
    notes = (Note(0.0, 76, 1.0, program=40), Note(0.0, 48, 2.0, program=42), Note(1.0, 36, 1.25, is_drum=True))
    figure = piano_roll(Score(notes))
    assert [trace.name for trace in figure.data] == ["Cello", "Violin", "Drums"]
    assert len({trace.marker.color for trace in figure.data}) == 3 and figure.layout.showlegend
    assert "cello" in figure.data[0].hovertext[0]
