"""Training for real with TensorFlow on tiny models: resume, more epochs, best weights, stop."""

import h5py
import pytest

from musicgen import bundle
from musicgen.model import ModelConfig
from musicgen.tokens import Vocabulary
from musicgen.train import TrainConfig, run_folder, train_sequences
from tests.conftest import TINY_MODEL

VOCABULARY = Vocabulary()
MODEL = ModelConfig(vocabulary_size=len(VOCABULARY), **TINY_MODEL)


def info(epochs: int, **settings) -> bundle.BundleInfo:
    config = TrainConfig(**{"epochs": epochs, "sequence_length": 16, "batch_size": 8, **settings})
    return bundle.BundleInfo(MODEL, VOCABULARY, "f" * 64, ["a.mid"], config)


class Interrupt(Exception):
    pass


def interrupt_after_first_epoch(report):
    if report.epoch == 1:
        raise Interrupt


def optimizer_steps(run_dir) -> int:
    with h5py.File(run_dir / "backup" / "latest.weights.h5") as weights:
        return int(weights["optimizer/vars/0"][()])


def test_interrupted_run_resumes_at_the_next_epoch_with_its_optimizer(tmp_path, token_sequences):
    with pytest.raises(Interrupt):
        train_sequences(token_sequences, tmp_path, info(2), on_epoch=interrupt_after_first_epoch)
    steps_after_one_epoch = optimizer_steps(tmp_path)
    assert steps_after_one_epoch > 0
    epochs_seen = []
    result = train_sequences(token_sequences, tmp_path, info(2), on_epoch=lambda r: epochs_seen.append(r.epoch))
    assert (result.resumed_from_epoch, result.epochs_done, epochs_seen) == (1, 2, [2])
    assert optimizer_steps(tmp_path) == 2 * steps_after_one_epoch
    assert len(bundle.read_history(tmp_path)) == 2


def test_asking_for_more_epochs_continues_a_finished_run(tmp_path, token_sequences):
    train_sequences(token_sequences, tmp_path, info(2))
    result = train_sequences(token_sequences, tmp_path, info(4))
    assert (result.resumed_from_epoch, result.epochs_done) == (2, 4)
    assert [entry["epoch"] for entry in bundle.read_history(tmp_path)] == [1, 2, 3, 4]


def test_stop_request_ends_training_and_keeps_finished_epochs(tmp_path, token_sequences):
    reports = []
    result = train_sequences(
        token_sequences, tmp_path, info(5), on_epoch=reports.append, should_stop=lambda: len(reports) >= 1
    )
    assert result.stopped and result.epochs_done == 1
    assert (tmp_path / "model.weights.h5").exists()


def test_loss_falls_and_best_weights_follow_validation_loss(tmp_path, token_sequences):
    train_sequences(token_sequences, tmp_path, info(6, learning_rate=0.01))
    history = bundle.read_history(tmp_path)
    assert history[-1]["loss"] < history[0]["loss"]
    assert all(entry["validation_loss"] is not None for entry in history)


def test_run_folder_depends_on_corpus_and_settings_but_not_epochs(tmp_path):
    first = run_folder(tmp_path, "a" * 64, MODEL, TrainConfig(epochs=2))
    assert first == run_folder(tmp_path, "a" * 64, MODEL, TrainConfig(epochs=30))
    assert first != run_folder(tmp_path, "b" * 64, MODEL, TrainConfig(epochs=2))
    assert first != run_folder(tmp_path, "a" * 64, MODEL, TrainConfig(epochs=2, sequence_length=64))


def test_too_little_music_for_the_sequence_length_is_a_plain_error(tmp_path, token_sequences):
    with pytest.raises(ValueError, match="too short for a sequence length"):
        train_sequences(token_sequences[:1], tmp_path, info(1, sequence_length=2048, validation_share=0.0))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"epochs": 0}, "epochs must be"),
        ({"sequence_length": 4}, "sequence_length must be"),
        ({"learning_rate": 5.0}, "learning_rate"),
    ],
)
def test_absurd_training_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)
