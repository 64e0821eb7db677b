"""musicgen.evaluate on a tiny model trained for real from MIDI files written in the test."""

import hashlib
import json
import math

import numpy as np
import pytest

from musicgen import midi
from musicgen.bundle import BundleInfo, load_bundle
from musicgen.corpus import corpus_to_ids, load_paths
from musicgen.dataset import split_by_file
from musicgen.evaluate import (
    EVALUATION_FILE,
    PieceSet,
    evaluate_bundle,
    format_report,
    lstm_likelihood,
    mean_style,
    read_recommendation,
    rebuild_split,
    recommend_temperatures,
    score_logits,
)
from musicgen.model import ModelConfig, build_model
from musicgen.originality import COPY_THRESHOLD_NOTES
from musicgen.score import Note, Score
from musicgen.tokens import Vocabulary, encode
from musicgen.train import TrainConfig, train
from tests.conftest import TINY_MODEL, scale_piece

VOCABULARY = Vocabulary()
TRAIN_CONFIG = TrainConfig(epochs=2, sequence_length=16, batch_size=8, validation_share=0.2, seed=3)


def write_pieces(folder, seeds) -> list:
    folder.mkdir(exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"piece{seed}.mid"
        path.write_bytes(midi.write(scale_piece(seed)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on ten MIDI files; (bundle folder, file paths, corpus)."""
    root = tmp_path_factory.mktemp("evaluate")
    paths = write_pieces(root / "music", range(10))
    corpus = load_paths(paths)
    result = train(corpus, root / "runs", ModelConfig(**TINY_MODEL), TRAIN_CONFIG)
    return result.run_dir, paths, corpus


@pytest.fixture(scope="module")
def report(trained):
    run_dir, paths, _ = trained
    return evaluate_bundle(run_dir, paths, temperatures=[0.5, 1.0], pieces=2)


def test_the_held_out_files_are_the_ones_training_held_out(trained, report):
    _, _, corpus = trained
    ids = corpus_to_ids(corpus, VOCABULARY)
    _, validation = split_by_file(ids, TRAIN_CONFIG.validation_share, TRAIN_CONFIG.seed)  # as train does
    held_out = {
        name for name, sequence in zip(corpus.names, ids, strict=True) if any(sequence is v for v in validation)
    }
    assert set(report.split.held_out) == held_out and len(held_out) == 2
    assert set(report.split.training) == set(corpus.names) - held_out
    assert report.split.note is None


def test_the_split_is_rebuilt_whatever_order_the_files_come_in(trained, report):
    run_dir, paths, _ = trained
    reversed_corpus = load_paths(paths[::-1])
    split = rebuild_split(reversed_corpus, load_bundle(run_dir).info)
    assert set(split.held_out) == set(report.split.held_out) and split.note is None


def test_likelihoods_are_finite_and_positive(report):
    for likelihood in (report.lstm, report.ngram):
        assert math.isfinite(likelihood.nll_per_token) and likelihood.nll_per_token > 0
        assert 0 <= likelihood.accuracy <= 1
    assert report.lstm.tokens == report.ngram.tokens > 0
    assert report.improvement == pytest.approx(1 - report.lstm.nll_per_token / report.ngram.nll_per_token)
    assert [score.order for score in report.ngram_orders] == [1, 2, 3, 4, 5]


def test_a_model_with_constant_logits_scores_ln_v_and_never_guesses_right():
    model = build_model(ModelConfig(vocabulary_size=len(VOCABULARY), **TINY_MODEL))
    kernel, bias = model.get_layer("logits").get_weights()
    model.get_layer("logits").set_weights([np.zeros_like(kernel), np.zeros_like(bias)])
    sequences = [np.array(encode(scale_piece(seed), VOCABULARY), np.int32) for seed in (1, 2)]
    likelihood = lstm_likelihood(model, sequences)
    assert likelihood.nll_per_token == pytest.approx(math.log(len(VOCABULARY)), rel=1e-6)
    assert likelihood.accuracy == 0.0  # every tie goes to id 0, `pad`, which never occurs
    assert likelihood.tokens == sum(len(ids) - 1 for ids in sequences)


def test_score_logits_by_hand():
    logits = np.log([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])
    nll, correct = score_logits(logits, np.array([1, 2]))
    assert nll == pytest.approx(-math.log(0.25) - math.log(0.8))
    assert correct == 1


def test_evaluation_is_deterministic(trained, report):
    run_dir, paths, _ = trained
    assert evaluate_bundle(run_dir, paths, temperatures=[0.5, 1.0], pieces=2) == report


def test_report_formats_as_plain_tables(report):
    text = format_report(report)
    for words in (
        "Held-out likelihood",
        "best n-gram (order",
        "temperature 0.5",
        "held-out music",
        "Recommended",
    ):
        assert words in text
    assert "NOTE" not in text


def test_the_recommendation_is_cached_in_the_bundle_and_read_back(trained, report):
    run_dir, _, _ = trained
    figures = json.loads((run_dir / EVALUATION_FILE).read_text())
    assert figures["lstm"]["nll_per_token"] == report.lstm.nll_per_token
    assert read_recommendation(run_dir) == report.recommended
    assert report.recommended is None or report.recommended[0] in (0.5, 1.0)


def test_no_recommendation_without_an_evaluation_or_after_retraining(trained, tmp_path):
    run_dir, _, _ = trained
    assert read_recommendation(tmp_path) is None
    figures = json.loads((run_dir / EVALUATION_FILE).read_text())
    (tmp_path / "model.weights.h5").write_bytes(b"other weights")
    (tmp_path / EVALUATION_FILE).write_text(json.dumps(figures | {"recommended_temperatures": [0.7, 0.9]}))
    assert read_recommendation(tmp_path) is None
    (tmp_path / EVALUATION_FILE).write_text("{damaged")
    assert read_recommendation(tmp_path) is None


@pytest.mark.parametrize("recommended", ["[NaN, NaN]", "[0.5, 7.0]", "[1.0, 0.5]", '"warm"', "[0.6]"])
def test_a_damaged_recommendation_is_ignored_with_a_log_line(tmp_path, caplog, recommended):
    (tmp_path / "model.weights.h5").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    figures = '{"weights_sha256": "%s", "recommended_temperatures": %s}'
    (tmp_path / EVALUATION_FILE).write_text(figures % (digest, "[0.6, 1.0]"))
    assert read_recommendation(tmp_path) == (0.6, 1.0)
    (tmp_path / EVALUATION_FILE).write_text(figures % (digest, recommended))
    assert read_recommendation(tmp_path) is None
    assert "ignoring the evaluation.json" in caplog.text


def test_other_files_than_the_training_corpus_are_reported_plainly(trained, tmp_path):
    run_dir, paths, _ = trained
    new = write_pieces(tmp_path, [50])
    split = rebuild_split(load_paths([*paths, *new]), load_bundle(run_dir).info)
    assert "not exactly the music the model was trained on" in split.note
    assert "piece50.mid" in split.held_out and len(split.held_out) == 3


def test_only_training_files_leave_nothing_to_measure(trained, report):
    run_dir, paths, _ = trained
    learned = [path for path in paths if path.name in report.split.training]
    with pytest.raises(ValueError, match="every given file was used to train this model"):
        rebuild_split(load_paths(learned), load_bundle(run_dir).info)


def test_only_unknown_files_leave_no_baseline(trained, tmp_path):
    run_dir, _, _ = trained
    info = load_bundle(run_dir).info
    with pytest.raises(ValueError, match="none of the given files is one the model learned from"):
        rebuild_split(load_paths(write_pieces(tmp_path, [60, 61])), info)


def test_renamed_training_files_are_refused_plainly(trained, tmp_path):
    run_dir, paths, _ = trained
    for path in paths:
        (tmp_path / f"renamed-{path.name}").write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="some have other names now"):
        rebuild_split(load_paths(sorted(tmp_path.iterdir())), load_bundle(run_dir).info)


def test_a_model_trained_without_validation_files_has_none_to_give(trained):
    _, paths, corpus = trained
    config = TrainConfig(validation_share=0.0)
    info = BundleInfo(ModelConfig(**TINY_MODEL), VOCABULARY, corpus.fingerprint, list(corpus.names), config)
    with pytest.raises(ValueError, match="trained with no validation files"):
        rebuild_split(corpus, info)


def test_style_means_weigh_each_piece_by_its_length():
    scale = Score(tuple(Note(beat, pitch, beat + 1) for beat, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72])))
    chromatic = Score(tuple(Note(beat, pitch, beat + 1) for beat, pitch in enumerate([60, 61, 62])))
    style = mean_style([scale, chromatic], [1 / 12] * 12)
    assert style["scale_consistency"] == pytest.approx((8 * 1 + 3 * 2 / 3) / 11)  # no scale has 3 semitones in a row


def piece_set(temperature, gap, longest=4):
    return PieceSet(temperature, 8, 100.0, {}, gap, longest, longest, 0.1)


def test_the_recommended_range_is_the_run_of_good_temperatures_around_the_best():
    sets = [
        piece_set(0.6, 1.5),
        piece_set(0.8, 0.9),
        piece_set(1.0, 0.7),
        piece_set(1.2, 1.1),
        piece_set(1.4, 2.0),
    ]
    assert recommend_temperatures(sets) == (0.8, 1.2)


def test_temperatures_that_copy_long_passages_are_not_recommended():
    sets = [piece_set(0.5, 0.1, longest=COPY_THRESHOLD_NOTES), piece_set(1.0, 0.6), piece_set(1.5, 0.9)]
    assert recommend_temperatures(sets) == (1.0, 1.5)
    assert recommend_temperatures([piece_set(0.5, 0.1, longest=COPY_THRESHOLD_NOTES)]) is None
