"""Teaching it your music with a handful of files: the base fine-tuned on a few airs, against a new model.

    python -m benchmarks.finetune [--base checkpoints/base] [--files 5 20] [--minutes 3] [--tuning]

The music is a style no built-in model learned: Scottish airs of James Aird's books on the flute
(benchmarks.airs), converted from music21's corpus at run time. For 5 and for 20 airs drawn from books 1-5,
two models learn them for the same wall time (`--minutes`, the time budget of each `musicgen.train.train`
call, model building included):

- a new model with the app's settings for one (2 x 128 LSTM, sequence length 64, learning rate 2e-3,
  instrument tokens), for as many epochs as the time allows;
- the base (`--base`) with the fine-tuning settings of `musicgen.settings.fine_tuning` (the app's and the
  command line's when a training starts from a model), which may end sooner (early stopping).

Both keep their weights of best validation loss (on their own uploaded files). Printed for each: the
held-out nats/token on 40 airs of book 6 (never trained on, and none sharing a passage of 32 notes with the
training airs or the built-in music) and the ratio fine-tuned / new (target at most 0.8); the style of
PIECES pieces each composes with the app's likeness settings (musicgen.likeness), each measure's distance
to the uploaded airs and to the base's music (the built-in styles); and the longest passage a piece copies
from the uploads or from the base's music (target under 32 notes). `--tuning` draws from books 1-4 and
tests on book 5, to choose settings without looking at book 6; `--learning-rate`, `--transpose`,
`--patience` and `--best-after` then override the fine-tuning settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.airs import REPOSITORY, AirSplit, built_in_scores, split_airs
from musicgen import likeness
from musicgen.bundle import load_bundle, load_weight_arrays
from musicgen.corpus import Corpus, load_paths
from musicgen.evaluate import lstm_likelihood
from musicgen.jobs import NEW_MODEL_VOCABULARY
from musicgen.metrics import StyleMeasures, corpus_style, histogram_distance
from musicgen.model import ModelConfig
from musicgen.originality import COPY_THRESHOLD_NOTES, index_corpus, measure_originality
from musicgen.sample import SampleConfig, Sampler
from musicgen.score import Score
from musicgen.settings import EPOCH_RANGE, TrainConfig
from musicgen.tokens import encode
from musicgen.train import fine_tuning_settings, train

NEW_MODEL = ModelConfig(layers=2, units=128)  # the app's defaults for a new model (streamlit_app.training_controls)
NEW_TRAINING = TrainConfig(sequence_length=64)  # the app's default sequence length; learning rate 2e-3
PIECES = 16  # composed by each model, in batches of 8 with seeds 0, 1...
MEASURES = ("polyphony", "notes_per_beat", "pitch_range")  # besides the pitch-class histogram
TARGET_RATIO = 0.8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trained:
    """One model of the benchmark and what it measured."""

    name: str  # "new model" or "fine-tuned base"
    run_dir: Path
    seconds: float  # wall time of the training call
    steps: int
    epochs: int
    ended_by: str
    nll_per_token: float  # on the test airs
    style: StyleMeasures  # of its pieces
    copied_from_uploads: int  # notes in a row, the longest over its pieces
    copied_from_base: int


def train_new_model(corpus: Corpus, runs: Path, seconds: int) -> tuple[Path, float, object]:
    """A new model with the app's settings, trained for `seconds`."""
    config = replace(NEW_TRAINING, epochs=EPOCH_RANGE[1], time_budget_seconds=seconds)
    return timed_training(corpus, runs, NEW_MODEL, config, NEW_MODEL_VOCABULARY, None)


def fine_tune(corpus: Corpus, runs: Path, base: Path, seconds: int, overrides: dict) -> tuple[Path, float, object]:
    """The base fine-tuned with the fine-tuning settings (and any overrides), within `seconds`."""
    start_from = load_bundle(base)
    vocabulary = start_from.info.vocabulary
    config = fine_tuning_settings(corpus, vocabulary, NEW_TRAINING)
    config = replace(config, time_budget_seconds=seconds, **overrides)
    return timed_training(corpus, runs, start_from.info.model_config, config, vocabulary, start_from)


def timed_training(corpus, runs, model_config, config, vocabulary, start_from) -> tuple[Path, float, object]:
    started = time.perf_counter()
    result = train(corpus, runs, model_config, config, vocabulary, start_from=start_from)
    seconds = time.perf_counter() - started
    log.info("%s: %d steps, %d epochs in %.0f s", result.run_dir.name, result.steps_done, result.epochs_done, seconds)
    return result.run_dir, seconds, result


def compose(run_dir: Path) -> list[Score]:
    """PIECES pieces with the settings the app measures a new model's likeness with."""
    info, weights = load_weight_arrays(run_dir)
    sampler = Sampler(weights, info.vocabulary, info.openings)
    config = SampleConfig(temperature=likeness.TEMPERATURE, max_seconds=likeness.PIECE_SECONDS, variations=8)
    return [piece for seed in range(PIECES // 8) for piece in sampler.scores(replace(config, seed=seed))]


def test_likelihood(run_dir: Path, test: list[Score]) -> float:
    """Nats per token of the test airs under the model's best weights."""
    model = load_bundle(run_dir)
    ids = [np.asarray(encode(score, model.info.vocabulary), np.int32) for score in test]
    return lstm_likelihood(model.model, ids).nll_per_token


def measure(name, run_dir, seconds, result, test, uploads_index, base_index) -> Trained:
    pieces = compose(run_dir)
    return Trained(
        name,
        run_dir,
        seconds,
        result.steps_done,
        result.epochs_done,
        result.ended_by,
        test_likelihood(run_dir, test),
        corpus_style(pieces),
        max(measure_originality(piece, uploads_index).longest_copied_notes for piece in pieces),
        max(measure_originality(piece, base_index).longest_copied_notes for piece in pieces),
    )


def distances(style: StyleMeasures, reference: StyleMeasures) -> dict[str, float]:
    """Pitch-class histogram distance (Jensen-Shannon, bits) and the absolute difference of each other measure."""
    pitch = histogram_distance(style.pitch_class_histogram, reference.pitch_class_histogram)
    return {"pitch_classes": pitch} | {key: abs(getattr(style, key) - getattr(reference, key)) for key in MEASURES}


def style_lines(trained: Trained, uploads: StyleMeasures, base: StyleMeasures) -> list[str]:
    """Each measure of the model's pieces beside the uploads' and the base music's, and which is nearer."""
    to_uploads, to_base = distances(trained.style, uploads), distances(trained.style, base)
    lines = [f"  pitch classes: {to_uploads['pitch_classes']:.3f} bits from the uploads, "
             f"{to_base['pitch_classes']:.3f} from the base's music"]  # fmt: skip
    for key in MEASURES:
        lines.append(
            f"  {key.replace('_', ' ')}: {getattr(trained.style, key):.2f} (uploads {getattr(uploads, key):.2f}, "
            f"base's music {getattr(base, key):.2f})"
        )
    closer = [key for key in to_uploads if to_uploads[key] < to_base[key]]
    lines.append(f"  closer to the uploads than to the base's music: {len(closer)} of {len(to_uploads)} measures")
    return lines


def report(files: int, split: AirSplit, new: Trained | None, tuned: Trained, uploads, base) -> None:
    print(f"\n== {files} airs to learn from ({split.training[0].name}...), {len(split.test)} test airs ==")
    for trained in (new, tuned):
        if trained is None:
            continue
        ended = f", ended by its {trained.ended_by}" if trained.ended_by else ""
        print(
            f"{trained.name}: {trained.nll_per_token:.3f} nats/token on the test airs; "
            f"trained {trained.seconds:.0f} s, {trained.steps} steps, {trained.epochs} epochs{ended}"
        )
        print("\n".join(style_lines(trained, uploads, base)))
        print(
            f"  longest passage copied: {trained.copied_from_uploads} notes from the uploads, "
            f"{trained.copied_from_base} from the base's music (target under {COPY_THRESHOLD_NOTES})"
        )
    if new is not None:
        ratio = tuned.nll_per_token / new.nll_per_token
        verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
        print(f"held-out ratio, fine-tuned / new model: {ratio:.3f} (target at most {TARGET_RATIO}: {verdict})")


def run(arguments: argparse.Namespace) -> None:
    runs = arguments.runs / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
    split = split_airs(arguments.runs / "airs", max(arguments.files), tuning=arguments.tuning)
    test = list(load_paths(split.test).scores)
    base_scores = built_in_scores()
    base, base_index = corpus_style(base_scores), index_corpus(base_scores)
    overrides = {
        name: value
        for name, value in (
            ("learning_rate", arguments.learning_rate),
            ("transpose_semitones", arguments.transpose),
            ("patience_steps", arguments.patience),
            ("best_after_steps", arguments.best_after),
        )
        if value is not None
    }
    print(f"load average before: {os.getloadavg()[0]:.2f}; base {arguments.base}; overrides {overrides or 'none'}")
    figures = []
    for files in arguments.files:
        corpus = load_paths(split.training[:files], NEW_MODEL_VOCABULARY)
        uploads, uploads_index = corpus_style(corpus.scores), index_corpus(corpus.scores)
        seconds = round(arguments.minutes * 60)
        new = None
        if not arguments.skip_new:
            new = measure("new model", *train_new_model(corpus, runs / f"new-{files}", seconds), test, uploads_index,
                          base_index)  # fmt: skip
        tuned = fine_tune(corpus, runs / f"tuned-{files}", arguments.base, seconds, overrides)
        tuned = measure("fine-tuned base", *tuned, test, uploads_index, base_index)
        report(files, split, new, tuned, uploads, base)
        figures.append({"files": files, "new": _figures(new), "fine_tuned": _figures(tuned)})
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "figures.json").write_text(json.dumps(figures, indent=1, default=str))


def _figures(trained: Trained | None) -> dict | None:
    if trained is None:
        return None
    return {
        "nll_per_token": trained.nll_per_token,
        "seconds": trained.seconds,
        "steps": trained.steps,
        "ended_by": trained.ended_by,
        "style": trained.style.as_dict() | {"pitch_class_histogram": trained.style.pitch_class_histogram},
        "copied_from_uploads": trained.copied_from_uploads,
        "copied_from_base": trained.copied_from_base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPOSITORY / "checkpoints" / "base")
    parser.add_argument("--files", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--minutes", type=float, default=3.0, help="training time of each model")
    parser.add_argument("--tuning", action="store_true", help="books 1-4 to learn, book 5 to test")
    parser.add_argument("--skip-new", action="store_true", help="only fine-tune (when choosing settings)")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--transpose", type=int)
    parser.add_argument("--patience", type=int, help="steps")
    parser.add_argument("--best-after", type=int, help="steps before which no weights are kept once later ones are")
    parser.add_argument("--runs", type=Path, default=REPOSITORY / "runs")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("musicgen").setLevel(logging.WARNING)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
