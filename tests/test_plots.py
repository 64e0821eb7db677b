"""musicgen.plots: the piano roll follows the tempo map, marks the primer, and never fails on nothing."""

from xml.etree import ElementTree

import pytest

from musicgen.plots import PRIMER_COLOUR, loss_curve, piano_roll, pitch_to_name
from musicgen.score import Note, Score, Tempo

SVG = "{http://www.w3.org/2000/svg}"


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


def drawn(html: str) -> ElementTree.Element:
    """The roll's HTML as an element tree (it is well-formed XML)."""
    return ElementTree.fromstring(html)


def bars(html: str) -> list[dict]:
    """Each note's bar: its place, size, colour and what it says under the pointer."""
    return [
        {key: rect.get(key) for key in ("x", "y", "width", "fill")} | {"about": rect.find(f"{SVG}title").text}
        for rect in drawn(html).iter(f"{SVG}rect")
    ]


def texts(html: str, kind: str) -> list[str]:
    return [label.text for label in drawn(html).iter(f"{SVG}text") if label.get("class") == kind]


def test_piano_roll_draws_one_bar_per_note_in_seconds():
    html = piano_roll(two_tempo_piece(), title="my piece")
    drawn_bars = bars(html)
    starts = [float(bar["x"]) for bar in drawn_bars]
    widths = [float(bar["width"]) for bar in drawn_bars]
    units_per_second = widths[0] / 0.5
    assert [start - starts[0] for start in starts] == pytest.approx(
        [0.0, 0.5 * units_per_second, 0.75 * units_per_second, 2.0 * units_per_second], abs=0.1
    )
    assert widths == pytest.approx(
        [0.5 * units_per_second, 0.25 * units_per_second, 0.75 * units_per_second, units_per_second], abs=0.1
    )
    heights = [float(bar["y"]) for bar in drawn_bars]
    assert heights == sorted(heights, reverse=True)  # higher notes further up: 60, 64, 67, 72
    assert "my piece" in html and texts(html, "time")[:2] == ["0 s", "1 s"]


def test_piano_roll_colours_by_loudness_and_explains_each_note_under_the_pointer():
    html = piano_roll(two_tempo_piece())
    drawn_bars = bars(html)
    darkness = [sum(int(bar["fill"][i : i + 2], 16) for i in (1, 3, 5)) for bar in drawn_bars]
    assert darkness == sorted(darkness, reverse=True) and len(set(darkness)) == 4  # velocities 40 < 80 < 100 < 127
    assert "quiet" in html and "loud" in html
    assert drawn_bars[0]["about"].startswith("C4 grand piano, start 0.00 s")
    assert "length 0.75 s" in drawn_bars[2]["about"] and "loudness 100" in drawn_bars[2]["about"]


def test_piano_roll_names_the_pitches_on_the_axis():
    names = texts(piano_roll(two_tempo_piece()), "pitch")
    assert names[0] == "C4" and names[-1] == "C5" and "E4" in names  # every pitch over a small range, low first


def test_a_wide_piece_names_only_the_cs():
    score = Score((Note(0.0, 30, 1.0), Note(1.0, 90, 2.0)))
    assert texts(piano_roll(score), "pitch") == ["C2", "C3", "C4", "C5", "C6"]


@pytest.mark.parametrize(
    "primer",
    [2, {Note(0.0, 60, 1.0, 40), Note(1.0, 64, 1.5, 80)}],
    ids=["first notes", "explicit notes"],
)
def test_the_primer_is_drawn_apart_with_a_legend_entry(primer):
    html = piano_roll(two_tempo_piece(), primer_notes=primer)
    opening = [bar for bar in bars(html) if bar["fill"] == PRIMER_COLOUR]
    assert [bar["about"][:2] for bar in opening] == ["C4", "E4"] and "your opening" in html
    assert len(bars(html)) == 4 and "quiet" in html  # the composed notes keep the loudness colours


def test_a_piece_that_is_all_primer_has_only_the_opening_in_its_legend():
    html = piano_roll(two_tempo_piece(), primer_notes=10)
    assert {bar["fill"] for bar in bars(html)} == {PRIMER_COLOUR} and "quiet" not in html


def test_an_empty_score_says_so():
    html = piano_roll(Score(), primer_notes=3, title="nothing")
    assert "no notes" in html and not bars(html)


def test_a_title_and_instrument_names_are_escaped():
    html = piano_roll(two_tempo_piece(), title="<script>alert(1)</script> & more")
    assert "<script>" not in html and "&lt;script&gt;" in html
    drawn(html)


def test_piano_roll_of_many_notes_stays_light():
    notes = tuple(Note(i / 4, 40 + i % 48, i / 4 + 0.5, 1 + i % 127) for i in range(2000))
    html = piano_roll(Score(notes), primer_notes=100)
    assert len(bars(html)) == 2000
    assert len(html) < 400_000  # about 150 bytes a note
    assert len(texts(html, "time")) <= 11


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
    html = piano_roll(Score(notes))
    legend = [span.tail or "".join(span.itertext()) for span in drawn(html)[-1]]
    assert legend == ["Cello", "Violin", "Drums"] and "quiet" not in html
    assert len({bar["fill"] for bar in bars(html)}) == 3
    assert "cello" in bars(html)[0]["about"]
