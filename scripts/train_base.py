"""Train the base model (checkpoints/base): one model of every built-in style's music together.

Run from the repository root: `.venv/bin/python scripts/train_base.py [--minutes 35]`. It learns, with
instrument tokens (the vocabulary of every new model, musicgen.jobs.NEW_MODEL_VOCABULARY), the files each
built-in style's own model trained on, and none of the files those models were measured on (their held-out
files, found as `musicgen evaluate` finds them), so that `python -m benchmarks.base_styles` can compare the
two on the same unseen music. Its own validation files (10%) choose its best weights. Training stops after
`--minutes`; the same command resumes the run (in runs/) and trains that long again. Uploaded music is then
learned on top of it (musicgen.settings.fine_tuning).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))  # run as a file, not installed: make `musicgen` importable

from musicgen.bundle import read_info  # noqa: E402
from musicgen.corpus import MIDI_SUFFIXES, load_paths  # noqa: E402
from musicgen.evaluate import training_names  # noqa: E402
from musicgen.jobs import NEW_MODEL_VOCABULARY  # noqa: E402
from musicgen.settings import EPOCH_RANGE, ModelConfig, TrainConfig  # noqa: E402
from musicgen.styles import built_in_styles  # noqa: E402

BASE = REPOSITORY / "checkpoints" / "base"
MODEL = ModelConfig(layers=2, units=256, embedding_size=64, dropout=0.2)  # the built-in styles' size
TRANSPOSE_SEMITONES = 2  # keys beyond those of the corpus, for music uploaded in other keys


def training_files() -> list[Path]:
    """The files the built-in styles' own models trained on, style by style."""
    files = []
    for style in built_in_styles():
        learned = set(training_names(read_info(style.model)[0]))
        music = sorted(path for path in style.music.rglob("*") if path.suffix.lower() in MIDI_SUFFIXES)
        files += [path for path in music if path.relative_to(style.music).as_posix() in learned]
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=35.0, help="training time of this call")
    parser.add_argument("--runs", type=Path, default=REPOSITORY / "runs")
    arguments = parser.parse_args()
    from musicgen.train import train  # TensorFlow, once the arguments are good

    corpus = load_paths(training_files(), NEW_MODEL_VOCABULARY)
    print(corpus.summary)
    config = TrainConfig(
        epochs=EPOCH_RANGE[1],
        transpose_semitones=TRANSPOSE_SEMITONES,
        time_budget_seconds=round(arguments.minutes * 60),
    )
    result = train(corpus, arguments.runs, MODEL, config, NEW_MODEL_VOCABULARY, on_epoch=print)
    shutil.copytree(result.run_dir, BASE, dirs_exist_ok=True, ignore=shutil.ignore_patterns("backup"))
    print(f"{result.epochs_done} epochs, {result.steps_done} steps in {result.run_dir}; copied to {BASE}")


if __name__ == "__main__":
    main()
