"""Training with model.fit: best weights by validation loss, resume from the last finished epoch."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras  # noqa: I001  (after musicgen.model, which sets the backend)
import numpy as np

from musicgen import bundle
from musicgen.corpus import Corpus, corpus_to_ids
from musicgen.dataset import make_dataset, split_by_file
from musicgen.model import build_model
from musicgen.settings import EpochReport, ModelConfig, TrainConfig
from musicgen.tokens import Vocabulary
from musicgen.training_path import TrainingPath, bfloat16_is_native, fastest_path


@dataclass(frozen=True)
class TrainResult:
    """How a call to `train` ended."""

    run_dir: Path
    resumed_from_epoch: int  # 0 for a fresh run
    epochs_done: int
    stopped: bool  # True when `should_stop` ended it early


class TrainingStopped(Exception):
    """Raised inside fit to end training at once; the last finished epoch is kept."""


def run_folder(runs_root: Path, fingerprint: str, model_config: ModelConfig, train_config: TrainConfig) -> Path:
    """The folder of the run for this corpus and these settings (epochs excluded)."""
    settings = {**asdict(model_config), **asdict(train_config)}
    del settings["epochs"]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return Path(runs_root) / f"{fingerprint[:12]}-{digest[:10]}"


def train(
    corpus: Corpus,
    runs_root: Path,
    model_config: ModelConfig = ModelConfig(),
    train_config: TrainConfig = TrainConfig(),
    vocabulary: Vocabulary = Vocabulary(),
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    start_from: bundle.Bundle | None = None,
) -> TrainResult:
    """Train (or resume) the run for this corpus and settings; the run folder is a model bundle.

    start_from: a trained model whose weights a new run starts from (its settings and vocabulary are used).
    """
    if start_from is not None:
        model_config, vocabulary = start_from.info.model_config, start_from.info.vocabulary
    model_config = ModelConfig(**{**asdict(model_config), "vocabulary_size": len(vocabulary)})
    run_dir = run_folder(runs_root, corpus.fingerprint, model_config, train_config)
    return train_sequences(
        corpus_to_ids(corpus, vocabulary),
        run_dir,
        bundle.BundleInfo(model_config, vocabulary, corpus.fingerprint, list(corpus.names), train_config),
        on_epoch,
        should_stop,
        start_from.model.get_weights() if start_from is not None else None,
    )


def train_sequences(
    sequences: Sequence[np.ndarray],
    run_dir: Path,
    info: bundle.BundleInfo,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial_weights: list[np.ndarray] | None = None,
) -> TrainResult:
    """Train on token arrays into `run_dir`, resuming whatever finished epochs it holds."""
    config = info.train_config
    train_part, validation_part = split_by_file(sequences, config.validation_share, config.seed)
    _check_long_enough(train_part, config.sequence_length)
    keras.utils.set_random_seed(config.seed)
    model = compiled_model(info.model_config, config)
    if initial_weights is not None:
        model.set_weights(initial_weights)  # a saved backup of this run, if any, takes precedence in fit
    history = bundle.read_history(run_dir)
    bundle.write_info(run_dir, info)
    progress = _Progress(run_dir, info, history, on_epoch, should_stop)
    try:
        model.fit(
            _datasets(train_part, info, config, shuffle=True),
            validation_data=_datasets(validation_part, info, config, shuffle=False) if validation_part else None,
            epochs=config.epochs,
            shuffle=False,  # the dataset shuffles its windows itself
            callbacks=[
                keras.callbacks.BackupAndRestore(run_dir / "backup", delete_checkpoint=False),
                progress,
            ],
            verbose=0,
        )
    except TrainingStopped:
        return TrainResult(run_dir, len(history), len(progress.history), stopped=True)
    return TrainResult(run_dir, len(history), len(progress.history), stopped=False)


def _check_long_enough(sequences: Sequence[np.ndarray], sequence_length: int) -> None:
    total = sum(len(sequence) for sequence in sequences)
    if total < sequence_length + 2:
        raise ValueError(
            f"the training music is too short for a sequence length of {sequence_length}: "
            f"it has {total} tokens; add files or lower the sequence length"
        )


def compute_dtype(precision: str) -> str:
    """The dtype of the matrix products: "auto" is bfloat16 only where the CPU multiplies it natively and it pays."""
    return fastest_path(precision).precision


def cpu_has_bfloat16() -> bool:
    """True on x86 CPUs with AVX-512 BF16 or AMX (read from /proc/cpuinfo, so False off Linux)."""
    return bfloat16_is_native()


def compiled_model(model_config: ModelConfig, config: TrainConfig, path: TrainingPath | None = None) -> keras.Model:
    """The network with its optimizer and loss, ready for `fit`, on `path` (default: the fastest on this CPU)."""
    path = fastest_path(config.precision) if path is None else path
    model = build_model(model_config, path.precision, path.fast_loop)
    accumulation = config.accumulation_steps if config.accumulation_steps > 1 else None
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=1.0, gradient_accumulation_steps=accumulation),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,  # XLA measured slower than the loop in model.LSTM
    )
    return model


def _datasets(sequences, info: bundle.BundleInfo, config: TrainConfig, shuffle: bool):
    tables = None
    if shuffle and config.transpose_semitones:
        shifts = range(-config.transpose_semitones, config.transpose_semitones + 1)
        tables = np.stack([info.vocabulary.transpose_table(shift) for shift in shifts])
    return make_dataset(
        sequences, config.sequence_length, config.batch_size, config.seed, shuffle, tables, config.accumulation_steps
    )


class _Progress(keras.callbacks.Callback):
    """Records history, keeps the best weights, reports each epoch and stops on request."""

    def __init__(self, run_dir, info, history, on_epoch, should_stop):
        super().__init__()
        self.run_dir, self.info, self.history = run_dir, info, list(history)
        self.on_epoch, self.should_stop = on_epoch, should_stop
        self.started = time.perf_counter()

    def on_train_begin(self, logs=None):
        del self.history[self.model._initial_epoch or 0 :]  # epochs after the last backup did not happen

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.should_stop is not None and self.should_stop():
            raise TrainingStopped

    def on_epoch_end(self, epoch, logs=None):
        report = EpochReport(
            epoch + 1,
            self.params["epochs"],
            float(logs["loss"]),
            float(logs["val_loss"]) if "val_loss" in logs else None,
            time.perf_counter() - self.started,
        )
        score = report.validation_loss if report.validation_loss is not None else report.loss
        if all(score < bundle.selection_loss(entry) for entry in self.history):
            bundle.write_weights(self.run_dir, self.model, self.info.model_config)
        self.history.append(asdict(report))
        bundle.write_history(self.run_dir, self.history)
        if self.on_epoch is not None:
            self.on_epoch(report)
