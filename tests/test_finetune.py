"""Fine-tuning: a training that starts from a trained model, its settings, time budget and early stopping; the
fine-tuning benchmark's music (benchmarks.airs). TensorFlow trains tiny models for real."""

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from musicgen import bundle, jobs, midi, settings
from musicgen.corpus import load_corpus, load_folder
from musicgen.model import ModelConfig
from musicgen.settings import TrainConfig, fine_tuning
from musicgen.train import fine_tuning_settings, run_folder, train, train_sequences
from tests.conftest import TINY_MODEL, scale_piece

REPOSITORY = Path(__file__).resolve().parent.parent


def music(count: int = 6):
    return load_corpus([(f"piece{n}.mid", midi.write(scale_piece(n))) for n in range(count)])


def test_fine_tuning_sets_its_learning_rate_transposition_budget_and_patience_and_keeps_more_epochs_asked_for():
    asked = TrainConfig(epochs=10, sequence_length=64)
    tuned = fine_tuning(asked, windows=61)  # 2,000 tokens
    assert tuned.learning_rate == settings.FINE_TUNING_LEARNING_RATE
    assert tuned.transpose_semitones == settings.FINE_TUNING_TRANSPOSE_SEMITONES
    assert tuned.time_budget_seconds == settings.FINE_TUNING_SECONDS
    assert tuned.patience_steps == settings.FINE_TUNING_PATIENCE_STEPS
    assert tuned.best_after_steps == settings.FINE_TUNING_BEST_AFTER_STEPS
    assert 10 < tuned.epochs <= settings.EPOCH_RANGE[1]  # a handful of files: many short epochs fit the budget
    assert fine_tuning(replace(asked, epochs=1000), 61).epochs == 1000
    assert fine_tuning(replace(asked, transpose_semitones=6), 61).transpose_semitones == 6
    many_tokens = fine_tuning(asked, windows=93_749)  # 3,000,000 tokens
    assert many_tokens.epochs == 10  # one epoch over a big upload already takes longer than the budget


def test_the_run_folder_of_earlier_settings_is_unchanged_so_earlier_runs_resume():
    model, config = ModelConfig(vocabulary_size=443), TrainConfig(learning_rate=1e-3)
    earlier = {**asdict(model), **asdict(config)}  # the settings as runs before the budget and patience named them
    for name in ("epochs", "checkpoint_steps", "time_budget_seconds", "patience_steps", "best_after_steps"):
        del earlier[name]
    digest = hashlib.sha256(json.dumps(earlier, sort_keys=True).encode()).hexdigest()
    stopping = replace(config, time_budget_seconds=60, patience_steps=9, best_after_steps=5)
    folder = run_folder(Path("runs"), "ab" * 32, model, stopping)
    assert folder.name == f"{'ab' * 6}-{digest[:10]}"


def test_shipped_models_written_before_the_budget_open_with_no_budget():
    info, _ = bundle.read_info(REPOSITORY / "checkpoints" / "fiddle-tunes")
    assert (info.train_config.time_budget_seconds, info.train_config.patience_steps) == (0, 0)


def test_the_app_plans_a_training_from_a_model_with_the_fine_tuning_settings(run_dir):
    asked = TrainConfig(epochs=3, sequence_length=16, batch_size=8)
    request = jobs.TrainingRequest(music(), ModelConfig(**TINY_MODEL), asked, start_from=run_dir)
    planned = jobs.plan_request(request, 10**9).train_config
    assert planned.learning_rate == settings.FINE_TUNING_LEARNING_RATE
    assert planned.time_budget_seconds == settings.FINE_TUNING_SECONDS and planned.epochs > 3
    new_model = jobs.plan_request(replace(request, start_from=None), 10**9).train_config
    assert new_model == asked


def test_fine_tuning_from_a_bundle_keeps_its_vocabulary_and_network_and_records_the_settings(run_dir, tmp_path):
    start = bundle.load_bundle(run_dir)
    corpus = music()
    config = replace(fine_tuning_settings(corpus, start.info.vocabulary, TrainConfig(sequence_length=16)), epochs=2)
    other_vocabulary = jobs.NEW_MODEL_VOCABULARY  # ignored: the start model's is used
    result = train(corpus, tmp_path, ModelConfig(units=64), config, other_vocabulary, start_from=start)
    tuned = bundle.load_bundle(result.run_dir)
    assert tuned.info.vocabulary == start.info.vocabulary and tuned.info.model_config == start.info.model_config
    assert tuned.info.train_config.learning_rate == settings.FINE_TUNING_LEARNING_RATE
    assert tuned.info.train_config.transpose_semitones == settings.FINE_TUNING_TRANSPOSE_SEMITONES
    assert result.epochs_done == 2 and not result.stopped
    pairs = zip(start.model.get_weights(), tuned.model.get_weights(), strict=True)
    assert any(not np.array_equal(before, after) for before, after in pairs)


def tiny_info(**train_settings) -> bundle.BundleInfo:
    vocabulary = jobs.NEW_MODEL_VOCABULARY
    config = TrainConfig(sequence_length=16, batch_size=8, **train_settings)
    model = ModelConfig(vocabulary_size=len(vocabulary), **TINY_MODEL)
    return bundle.BundleInfo(model, vocabulary, "e" * 64, ["a.mid"], config)


def test_a_run_out_of_time_ends_as_finished_with_its_best_weights_and_the_same_call_goes_on(tmp_path, token_sequences):
    info = tiny_info(epochs=1000, time_budget_seconds=1)
    first = train_sequences(token_sequences, tmp_path, info)
    assert (first.ended_by, first.stopped) == ("time budget", False)
    assert 1 <= first.epochs_done < 1000  # the budget never ends a run before its first epoch's weights
    assert (tmp_path / bundle.WEIGHTS_FILE).exists()
    again = train_sequences(token_sequences, tmp_path, info)
    assert again.resumed_from_step == first.steps_done and again.steps_done > first.steps_done


def test_patience_ends_a_run_only_once_the_best_validation_loss_is_that_many_steps_old(tmp_path, token_sequences):
    result = train_sequences(token_sequences, tmp_path, tiny_info(epochs=12, patience_steps=1, learning_rate=0.1))
    history = bundle.read_history(tmp_path)
    best_epoch = 1 + int(np.argmin([entry["validation_loss"] for entry in history]))
    steps_per_epoch = result.steps_done // result.epochs_done
    if result.ended_by == "patience":
        assert result.epochs_done < 12 and result.epochs_done - best_epoch >= 1
    else:
        assert result.epochs_done == 12 and best_epoch == 12  # it kept improving until the end
    assert steps_per_epoch >= 1


def test_the_benchmark_trains_and_tests_on_different_airs_none_sharing_a_long_passage(tmp_path):
    pytest.importorskip("music21")
    from benchmarks import airs

    demo = load_folder(REPOSITORY / "samples" / "demo").scores  # the built-in music takes seconds to index
    split = airs.split_airs(tmp_path, training_count=3, test_count=3, other_music=demo)
    training_numbers = [int(path.stem.split("_")[1]) for path in split.training]
    test_numbers = [int(path.stem.split("_")[1]) for path in split.test]
    assert all(number < airs.FIRST_TUNE[6] for number in training_numbers)
    assert test_numbers == sorted(test_numbers) and all(number >= airs.FIRST_TUNE[6] for number in test_numbers)
    trained_on = airs.index_corpus(midi.read(path) for path in split.training)
    assert not any(airs.shares_a_long_passage(midi.read(path), [trained_on]) for path in split.test)
    assert all(note.program == airs.FLUTE for note in midi.read(split.test[0]).notes)
    assert airs.split_airs(tmp_path, training_count=3, test_count=3, other_music=demo) == split  # from the cache


def test_a_tune_found_in_other_music_counts_as_sharing_a_long_passage():
    from benchmarks.airs import index_corpus, shares_a_long_passage

    tune, other = scale_piece(1, notes=80), scale_piece(2, notes=80)
    assert shares_a_long_passage(tune, [index_corpus([other, tune])])
    assert not shares_a_long_passage(tune, [index_corpus([other])])


def test_the_command_line_fine_tunes_a_model_with_the_fine_tuning_settings_within_its_minutes(run_dir, tmp_path):
    from musicgen.cli import main

    for number in range(4):
        (tmp_path / f"piece{number}.mid").write_bytes(midi.write(scale_piece(number)))
    arguments = ["train", str(tmp_path), "--start-from", str(run_dir), "--sequence-length", "16", "--batch-size", "8"]
    arguments += ["--minutes", "0.02", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert main(arguments) == 0
    info, _ = bundle.read_info(tmp_path / "out")
    assert info.vocabulary == bundle.read_info(run_dir)[0].vocabulary
    assert info.train_config.learning_rate == settings.FINE_TUNING_LEARNING_RATE
    assert info.train_config.time_budget_seconds == 1 and info.train_config.epochs > 20


def test_after_fine_tuning_the_base_the_page_compares_with_the_music_of_every_built_in_style():
    style, title = jobs.starting_music_style(jobs.BASE_MODEL)
    assert title == "the built-in styles" and 1 < style.polyphony < 4  # fiddle tunes 1, quartets and chorales more


def test_from_best_after_steps_on_the_weights_kept_are_the_best_of_the_epochs_ending_there_or_later(
    tmp_path, token_sequences
):
    steps_per_epoch = train_sequences(token_sequences, tmp_path / "one", tiny_info(epochs=1)).steps_done
    kept, digests = [], []

    def note_kept_weights(report):
        digest = hashlib.sha256((tmp_path / "run" / bundle.WEIGHTS_FILE).read_bytes()).hexdigest()
        if digest not in digests:
            kept.append(report.epoch)
        digests.append(digest)

    info = tiny_info(epochs=5, learning_rate=0.05, best_after_steps=3 * steps_per_epoch)
    train_sequences(token_sequences, tmp_path / "run", info, on_epoch=note_kept_weights)
    losses = {entry["epoch"]: entry["validation_loss"] for entry in bundle.read_history(tmp_path / "run")}
    assert 1 in kept and 3 in kept  # the first epoch, and the first that ends at best_after_steps, are always kept
    for epoch in kept:
        rivals = range(3, epoch) if epoch >= 3 else range(1, epoch)
        assert all(losses[epoch] < losses[rival] for rival in rivals)
    assert all(epoch in kept for epoch in (4, 5) if losses[epoch] < min(losses[e] for e in range(3, epoch)))
