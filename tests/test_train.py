"""Training for real with TensorFlow on tiny models: resume, more epochs, best weights, stop."""

import h5py
import keras
import numpy as np
import pytest

from musicgen import bundle
from musicgen.dataset import make_dataset
from musicgen.model import ModelConfig
from musicgen.tokens import Vocabulary
from musicgen.train import TrainConfig, compiled_model, run_folder, train_sequences
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


def stop_after(steps: int):
    calls = iter(range(1, 10**6))
    return lambda: next(calls) >= steps


def test_a_run_stopped_mid_epoch_resumes_at_the_same_step_with_the_same_optimizer_state(tmp_path, token_sequences):
    whole = train_sequences(token_sequences, tmp_path / "whole", info(2))
    steps_per_epoch = whole.steps_done // 2
    assert steps_per_epoch >= 3
    stopped = train_sequences(token_sequences, tmp_path / "split", info(2), should_stop=stop_after(steps_per_epoch + 1))
    assert (stopped.stopped, stopped.steps_done, stopped.epochs_done) == (True, steps_per_epoch + 1, 1)
    assert optimizer_steps(tmp_path / "split") == steps_per_epoch + 1
    resumed = train_sequences(token_sequences, tmp_path / "split", info(2))
    assert (resumed.resumed_from_step, resumed.steps_done, resumed.epochs_done) == (
        steps_per_epoch + 1,
        whole.steps_done,
        2,
    )
    assert optimizer_steps(tmp_path / "split") == optimizer_steps(tmp_path / "whole")
    with (
        h5py.File(tmp_path / "whole" / "backup" / "latest.weights.h5") as a,
        h5py.File(tmp_path / "split" / "backup" / "latest.weights.h5") as b,
    ):
        names = []
        a.visit(lambda name: names.append(name) if isinstance(a[name], h5py.Dataset) else None)
        for name in names:  # weights and Adam's moments: the same steps on the same batches
            np.testing.assert_allclose(b[name][()], a[name][()], rtol=1e-5, atol=1e-6)
    assert [e["epoch"] for e in bundle.read_history(tmp_path / "split")] == [1, 2]


def test_a_stop_asked_in_the_last_step_of_an_epoch_still_records_the_epoch(tmp_path, token_sequences):
    steps_per_epoch = train_sequences(token_sequences, tmp_path / "whole", info(1)).steps_done
    result = train_sequences(token_sequences, tmp_path / "run", info(2), should_stop=stop_after(steps_per_epoch))
    assert (result.stopped, result.steps_done, result.epochs_done) == (True, steps_per_epoch, 1)
    assert [entry["epoch"] for entry in bundle.read_history(tmp_path / "run")] == [1]


def test_checkpoint_steps_report_validation_within_an_epoch(tmp_path, token_sequences):
    reports = []
    train_sequences(token_sequences, tmp_path, info(1, checkpoint_steps=2), on_checkpoint=reports.append)
    steps_per_epoch = reports[-1].steps_per_epoch
    assert [r.step for r in reports] == [*range(2, steps_per_epoch, 2), steps_per_epoch]
    assert all(r.validation_loss is not None and r.loss > 0 for r in reports)
    assert len(bundle.read_history(tmp_path)) == 1


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


def test_a_batch_split_into_accumulated_steps_trains_the_same_weights():
    """What the memory budget relies on: 4 steps of 2 windows, gradients averaged, equal 1 step of 8.

    The windows repeat no input id: Keras's Adam squares an embedding's sparse gradient before adding up
    repeated rows, so with repeats the whole batch is the approximate one and the split batch the exact one."""
    ids = np.random.default_rng(0).permutation(len(VOCABULARY))[: 8 * 17].reshape(8, 17)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    keras.utils.set_random_seed(0)
    whole = compiled_model(MODEL, TrainConfig(batch_size=8, precision="float32"))
    keras.utils.set_random_seed(0)
    split = compiled_model(MODEL, TrainConfig(batch_size=8, accumulation_steps=4, precision="float32"))
    start = whole.get_weights()
    for _ in range(3):
        whole.train_on_batch(inputs, targets)
        for part in range(4):
            split.train_on_batch(inputs[2 * part : 2 * part + 2], targets[2 * part : 2 * part + 2])
    for trained, accumulated, initial in zip(whole.get_weights(), split.get_weights(), start, strict=True):
        assert not np.allclose(trained, initial)
        np.testing.assert_allclose(accumulated, trained, atol=1e-6)


def test_accumulation_cuts_each_shuffled_batch_into_equal_parts_and_drops_an_unfinished_batch(token_sequences):
    whole = [inputs.numpy() for inputs, _ in make_dataset(token_sequences, 16, 8, seed=3)]
    parts = [inputs.numpy() for inputs, _ in make_dataset(token_sequences, 16, 8, seed=3, accumulation_steps=4)]
    assert {len(batch) for batch in parts} == {2} and len(parts) == 4 * len(whole)
    np.testing.assert_array_equal(np.concatenate(parts), np.concatenate(whole))
