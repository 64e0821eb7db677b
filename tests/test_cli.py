"""The command line as a user runs it: a subprocess that trains on bundled chorales and writes a .mid."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from musicgen import midi

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
        (["train", "chorales", "--precision", "half"], "precision must be one of"),
        (["train", "missing.mid"], "error: "),
    ],
)
def test_mistakes_get_one_plain_line_and_a_failing_exit_status(trained, arguments, message):
    result = musicgen(*arguments, cwd=trained)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
