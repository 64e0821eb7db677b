"""The bundled samples: each file reads, and survives Score -> .mid -> Score."""

from pathlib import Path

import pytest

from musicgen import midi
from musicgen.corpus import load_folder

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SAMPLE_FILES = sorted(SAMPLES.rglob("*.mid"))
REGENERATE = "run .venv/bin/python scripts/make_samples.py"


def test_the_samples_are_there_and_small():
    assert len(list((SAMPLES / "bach").glob("*.mid"))) > 300, REGENERATE
    assert 4 <= len(list((SAMPLES / "demo").glob("*.mid"))) <= 6, REGENERATE
    for style, least in (("string-quartets", 30), ("madrigals", 40), ("fiddle-tunes", 400)):
        assert len(list((SAMPLES / "styles" / style).glob("*.mid"))) >= least, REGENERATE
    assert sum(path.stat().st_size for path in SAMPLE_FILES) < 5_000_000


def test_the_style_music_plays_on_its_instruments():
    programs = {
        style: {
            (note.program, note.is_drum)
            for path in (SAMPLES / "styles" / style).glob("*.mid")
            for note in midi.read(path).notes
        }
        for style in ("string-quartets", "madrigals")
    }
    assert programs == {"string-quartets": {(40, False), (41, False), (42, False)}, "madrigals": {(52, False)}}


def test_every_sample_is_used_and_the_demos_are_short():
    bach, demo = load_folder(SAMPLES / "bach"), load_folder(SAMPLES / "demo")
    assert [report.error for report in bach.reports + demo.reports if report.error] == []
    assert all(report.seconds < 90 and not report.warnings for report in demo.reports)


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda path: path.relative_to(SAMPLES).as_posix())
def test_every_sample_survives_a_midi_round_trip_exactly(path):
    score = midi.read(path)
    assert midi.read(midi.write(score)) == score
