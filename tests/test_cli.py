"""The command line as a user runs it: a subprocess that trains on bundled chorales and writes a .mid."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musicgen import midi
from musicgen.score import Note, Score

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--layers", "1", "--units", "16", "--embedding-size", "8", "--sequence-length", "32", "--batch-size", "8"]


def musicgen(*arguments, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "musicgen", *map(str, arguments)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny model trained for 2 epochs on eight bundled chorales, from a folder like a fresh checkout's."""
    folder = tmp_path_factory.mktemp("cli")
    chorales = folder / "chorales"
    chorales.mkdir()
    for path in sorted((ROOT / "samples" / "bach").glob("*.mid"))[:8]:
        shutil.copy(path, chorales)
    result = musicgen("train", chorales, "--epochs", "2", *TINY, "--out", "model", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout and "copied to model" in result.stdout
    return folder


def test_train_then_generate_writes_a_readable_midi_file(trained):
    result = musicgen("generate", "model", "--out", "piece.mid", "--seconds", "10", "--key", "G major", cwd=trained)
    assert result.returncode == 0, result.stderr
    piece = midi.read(trained / "piece.mid")
    assert piece.notes and piece.duration_seconds <= 10.5


def test_generate_in_a_built_in_style_needs_no_tensorflow(trained):
    styles = musicgen("styles", cwd=trained)
    assert styles.returncode == 0 and styles.stdout.splitlines()[0] == "bach"
    code = "import sys, musicgen.cli as c; c.main(sys.argv[1:]); print('tensorflow' in sys.modules)"
    arguments = ["generate", "--style", "bach", "--seconds", "5", "--program", "40", "--out", "bach.mid"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code, *arguments], cwd=trained, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "False", result.stderr
    assert {note.program for note in midi.read(trained / "bach.mid").notes} == {40}


def test_a_model_trained_with_instrument_tokens_writes_instruments_unless_one_is_chosen(trained, tmp_path):
    notes = [Note(beat / 2, 60 + 7 * part, beat / 2 + 0.5, 80, 40 + part) for beat in range(128) for part in range(2)]
    (tmp_path / "band.mid").write_bytes(midi.write(Score(tuple(notes))))
    options = ["--instruments", "--epochs", "1", *TINY, "--validation-share", "0", "--out", tmp_path / "model"]
    assert musicgen("train", tmp_path / "band.mid", *options, cwd=trained).returncode == 0
    assert json.loads((tmp_path / "model" / "vocabulary.json").read_text())["config"]["instruments"]
    primer = ["--primer", tmp_path / "band.mid", "--primer-notes", "8"]  # its parts open the piece
    for program, out in ((None, "as-written.mid"), ("6", "harpsichord.mid")):
        chosen = ["--program", program, *primer] if program else primer
        result = musicgen(
            "generate", tmp_path / "model", "--seconds", "20", *chosen, "--out", tmp_path / out, cwd=trained
        )
        assert result.returncode == 0, result.stderr
    assert {note.program for note in midi.read(tmp_path / "as-written.mid").notes[:6]} == {40, 41}
    assert {note.program for note in midi.read(tmp_path / "harpsichord.mid").melodic_notes} == {6}


def test_asking_for_more_epochs_resumes_the_run(trained):
    result = musicgen("train", "chorales", "--epochs", "3", *TINY, cwd=trained)
    assert result.returncode == 0, result.stderr
    assert "resumed the earlier run after epoch 2" in result.stdout and "epoch 1/3" not in result.stdout


def test_info_describes_the_model(trained):
    result = musicgen("info", "model", cwd=trained)
    assert result.returncode == 0 and "1 LSTM layers x 16 units" in result.stdout and "epochs: 2" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["generate", "no-such-model"], "error: "),
        (["generate", "model", "--temperature", "-3"], "temperature"),
        (["generate", "model", "--key", "H major"], "key"),
        (["generate", "--style", "jazz"], "there is no built-in style 'jazz'; the styles are: bach"),
        (["evaluate", "model"], "say which MIDI files or folders the model learned from"),
        (["train", "chorales", "--precision", "half"], "precision must be one of"),
        (["train", "missing.mid"], "error: "),
    ],
)
def test_mistakes_get_one_plain_line_and_a_failing_exit_status(trained, arguments, message):
    result = musicgen(*arguments, cwd=trained)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
