"""Training with model.fit: checkpoints counted in optimizer steps, resume mid-epoch, best weights by validation."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras  # noqa: I001  (after musicgen.model, which sets the backend)
import numpy as np

from musicgen import bundle
from musicgen.corpus import Corpus, corpus_to_ids
from musicgen.dataset import TrainingWindows, make_dataset, split_by_file, window_starts
from musicgen.model import build_model
from musicgen.sample import openings_of
from musicgen.settings import CheckpointReport, EpochReport, ModelConfig, TrainConfig, fine_tuning
from musicgen.tokens import Vocabulary
from musicgen.training_path import TrainingPath, bfloat16_is_native, fastest_path

CHECKPOINT_FOLDER = "backup"  # in the run folder; never goes into a model zip
CHECKPOINT_WEIGHTS = "latest.weights.h5"  # the weights and the optimizer's state
CHECKPOINT_POSITION = "training_metadata.json"  # where the run stands (written after the weights)
# Least time between two checkpoints written at segment ends (a call's last one, and every one when an on_checkpoint
# hook listens, are always written): the epochs of a handful of uploaded files take one step each, and writing
# weights and optimizer state after every one cost 12% of the steps of a 40 s fine-tuning (219 steps, not 250).
CHECKPOINT_SECONDS = 20.0


@dataclass(frozen=True)
class TrainResult:
    """How a call to `train` ended."""

    run_dir: Path
    resumed_from_epoch: int  # finished epochs the run held when this call started; 0 for a fresh run
    epochs_done: int
    stopped: bool  # True when `should_stop` ended it early
    resumed_from_step: int = 0  # optimizer steps the run held when this call started
    steps_done: int = 0  # optimizer steps the run holds now
    ended_by: str = ""  # "time budget" or "patience" when one of them ended it before its last epoch (not a stop)


@dataclass
class _Position:
    """Where a run stands; saved with every checkpoint."""

    step: int = 0  # optimizer steps done
    loss_sum: float = 0.0  # summed mean losses of the current epoch's steps so far
    epoch_seconds: float = 0.0  # training time of the current epoch so far


def run_folder(runs_root: Path, fingerprint: str, model_config: ModelConfig, train_config: TrainConfig) -> Path:
    """The folder of the run for this corpus and these settings (epochs excluded)."""
    settings = {**asdict(model_config), **asdict(train_config)}
    for name in ("epochs", "checkpoint_steps", "time_budget_seconds", "patience_steps", "best_after_steps"):
        del settings[name]  # none changes what the steps learn
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
    on_checkpoint: Callable[[CheckpointReport], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train (or resume) the run for this corpus and settings; the run folder is a model bundle.

    start_from: a trained model whose weights a new run starts from (its settings and vocabulary are used).
    on_checkpoint: hears every checkpoint (each `checkpoint_steps` steps and each epoch's end), before on_epoch.
    on_step: hears (optimizer steps done in the run, steps per epoch) after every step.
    """
    if start_from is not None:
        model_config, vocabulary = start_from.info.model_config, start_from.info.vocabulary
    model_config = ModelConfig(**{**asdict(model_config), "vocabulary_size": len(vocabulary)})
    run_dir = run_folder(runs_root, corpus.fingerprint, model_config, train_config)
    return train_sequences(
        corpus_to_ids(corpus, vocabulary),
        run_dir,
        bundle.BundleInfo(
            model_config,
            vocabulary,
            corpus.fingerprint,
            list(corpus.names),
            train_config,
            openings_of(corpus.scores, vocabulary),
        ),
        on_epoch,
        should_stop,
        start_from.model.get_weights() if start_from is not None else None,
        on_checkpoint,
        on_step,
    )


def fine_tuning_settings(corpus: Corpus, vocabulary: Vocabulary, config: TrainConfig) -> TrainConfig:
    """`musicgen.settings.fine_tuning` of the config, its epochs planned on the corpus's training files."""
    train_part, _ = split_by_file(corpus_to_ids(corpus, vocabulary), config.validation_share, config.seed)
    tokens, stride = sum(len(ids) for ids in train_part), max(1, config.sequence_length // 2)
    return fine_tuning(config, len(window_starts(tokens, config.sequence_length, stride)))


def train_sequences(
    sequences: Sequence[np.ndarray],
    run_dir: Path,
    info: bundle.BundleInfo,
    on_epoch: Callable[[EpochReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial_weights: list[np.ndarray] | None = None,
    on_checkpoint: Callable[[CheckpointReport], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train on token arrays into `run_dir`, resuming from its last checkpoint (mid-epoch too)."""
    config = info.train_config
    train_part, validation_part = split_by_file(sequences, config.validation_share, config.seed)
    _check_long_enough(train_part, config.sequence_length)
    keras.utils.set_random_seed(config.seed)
    model = compiled_model(info.model_config, config)
    windows = _training_windows(train_part, info, config)
    position = _restore(Path(run_dir), model, windows.steps_per_epoch)
    if position.step == 0 and initial_weights is not None:
        model.set_weights(initial_weights)
    bundle.write_info(run_dir, info)
    validation = _validation_windows(validation_part, config) if validation_part else None
    run = _Run(model, Path(run_dir), info, windows, validation, position, on_epoch, should_stop, on_checkpoint)
    if on_step is not None:
        run.stopper.on_step = lambda done: on_step(position.step + done, run.steps_per_epoch)
    return run.train()


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


def _training_windows(sequences, info: bundle.BundleInfo, config: TrainConfig) -> TrainingWindows:
    tables = None
    if config.transpose_semitones:
        shifts = range(-config.transpose_semitones, config.transpose_semitones + 1)
        tables = np.stack([info.vocabulary.transpose_table(shift) for shift in shifts])
    windows = TrainingWindows(sequences, config.sequence_length, config.batch_size, config.seed, tables)
    if config.accumulation_steps > 1 and windows.batch_size < config.batch_size:
        raise ValueError(
            f"{len(windows.starts)} training windows cannot make one batch of {config.batch_size} to accumulate"
        )
    return windows


def _validation_windows(sequences, config: TrainConfig):
    """Consecutive windows of the held-out files, in batches of the training steps' size."""
    return make_dataset(sequences, config.sequence_length, config.batch_size // config.accumulation_steps, 0, False)


def _restore(run_dir: Path, model: keras.Model, steps_per_epoch: int) -> _Position:
    """Load the run's last checkpoint into the model and optimizer; where it stands (step 0 without one)."""
    folder = run_dir / CHECKPOINT_FOLDER
    if not (folder / CHECKPOINT_WEIGHTS).exists():
        return _Position()
    model.optimizer.build(model.trainable_variables)
    model.load_weights(folder / CHECKPOINT_WEIGHTS)
    try:
        saved = json.loads((folder / CHECKPOINT_POSITION).read_text())
    except (OSError, ValueError):
        saved = {}
    if "step" in saved:
        return _Position(int(saved["step"]), float(saved["loss_sum"]), float(saved["epoch_seconds"]))
    return _Position(int(saved.get("epoch", 0)) * steps_per_epoch)  # written by keras.callbacks.BackupAndRestore


def _save_checkpoint(run_dir: Path, model: keras.Model, position: _Position) -> None:
    """Weights and optimizer state, then the position, each written whole before it replaces the last one."""
    folder = run_dir / CHECKPOINT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    model.save_weights(folder / f"next.{CHECKPOINT_WEIGHTS}", overwrite=True)
    (folder / f"next.{CHECKPOINT_WEIGHTS}").replace(folder / CHECKPOINT_WEIGHTS)
    (folder / f"next.{CHECKPOINT_POSITION}").write_text(json.dumps(asdict(position)))
    (folder / f"next.{CHECKPOINT_POSITION}").replace(folder / CHECKPOINT_POSITION)


class _Run:
    """The training loop: fit in segments that end at checkpoints and at epoch ends."""

    def __init__(self, model, run_dir, info, windows, validation, position, on_epoch, should_stop, on_checkpoint):
        self.model, self.run_dir, self.info, self.config = model, run_dir, info, info.train_config
        self.windows, self.validation, self.position = windows, validation, position
        self.on_epoch, self.on_checkpoint = on_epoch, on_checkpoint
        budget = self.config.time_budget_seconds
        self.deadline = time.monotonic() + budget if budget else None
        self.steps_per_epoch = windows.steps_per_epoch
        armed = position.step >= self.steps_per_epoch  # the budget never ends a run before its first epoch's weights
        self.stopper = _StopRequests(should_stop, self.config.accumulation_steps, self.deadline if armed else None)
        self.history = bundle.read_history(run_dir)[: position.step // self.steps_per_epoch]
        self.resumed_epochs, self.resumed_step = len(self.history), position.step
        rivals = self._rivals(position.step)
        self.best_step = (
            min(rivals, key=lambda entry: bundle.selection_loss(entry))["epoch"] * self.steps_per_epoch if rivals else 0
        )
        self.saved_at, self.saved_step = -math.inf, position.step

    def train(self) -> TrainResult:
        """Run segments until the last epoch ends or a stop is asked for."""
        total = self.config.epochs * self.steps_per_epoch
        ended_by = ""
        while self.position.step < total and not self.stopper.stopped and not ended_by:
            steps = self._segment_steps(total)
            loss, seconds, done = self._fit_segment(steps)
            if done == steps:  # a stop asked for in its last step still lets the segment end as usual
                self._after_segment(loss, seconds)
            if self.position.step < total:
                ended_by = "time budget" if self.stopper.out_of_time else "patience" if self._out_of_patience() else ""
        if self.saved_step != self.position.step:
            self._checkpoint(always=True)
        epochs, step, stopped = self.position.step // self.steps_per_epoch, self.position.step, self.stopper.stopped
        stopped = stopped and not self.stopper.out_of_time
        return TrainResult(self.run_dir, self.resumed_epochs, epochs, stopped, self.resumed_step, step, ended_by)

    def _rivals(self, step: int) -> list[dict]:
        """The finished epochs an epoch ending at `step` must beat to be kept: from `best_after_steps` on, only those
        ending there or later."""
        after = self.config.best_after_steps
        if step < after:
            return self.history
        return [entry for entry in self.history if entry["epoch"] * self.steps_per_epoch >= after]

    def _out_of_patience(self) -> bool:
        """True once the best validation loss is `patience_steps` steps old (never without validation files)."""
        patience = self.config.patience_steps
        return bool(patience and self.validation and self.position.step - self.best_step >= patience)

    def _checkpoint(self, always: bool = False) -> None:
        """Save the checkpoint, unless the last one is less than CHECKPOINT_SECONDS old."""
        if always or time.monotonic() - self.saved_at >= CHECKPOINT_SECONDS:
            _save_checkpoint(self.run_dir, self.model, self.position)
            self.saved_at, self.saved_step = time.monotonic(), self.position.step

    def _segment_steps(self, total: int) -> int:
        step, every = self.position.step, self.config.checkpoint_steps
        ends = [total, (step // self.steps_per_epoch + 1) * self.steps_per_epoch]
        if every:
            ends.append((step // every + 1) * every)
        return min(ends) - step

    def _fit_segment(self, steps: int) -> tuple[float, float, int]:
        """Train `steps` optimizer steps (fewer if stopped); their mean loss, seconds and number."""
        started = time.perf_counter()
        batches = self.windows.batches(self.position.step, steps, self.config.accumulation_steps)
        logs = self.model.fit(batches, epochs=1, verbose=0, shuffle=False, callbacks=[self.stopper]).history
        seconds, done = time.perf_counter() - started, self.stopper.steps_in_last_fit
        loss = float(logs["loss"][-1])
        self.position.step += done
        self.position.loss_sum += loss * done
        self.position.epoch_seconds += seconds
        return loss, seconds, done

    def _after_segment(self, loss: float, seconds: float) -> None:
        """Validation loss; at an epoch's end its report and the best weights; the checkpoint; then the hooks."""
        validation_loss = None
        if self.validation:  # as a dict: evaluate gives a list instead of the loss once the model has metrics
            validation_loss = float(self.model.evaluate(self.validation, verbose=0, return_dict=True)["loss"])
        epoch_report = None
        if self.position.step % self.steps_per_epoch == 0:
            epoch_report = self._end_epoch(validation_loss)
            self.stopper.deadline = self.deadline
        self._checkpoint(always=self.on_checkpoint is not None)  # the hook may read the checkpoint
        if self.on_checkpoint is not None:
            self.on_checkpoint(CheckpointReport(self.position.step, self.steps_per_epoch, loss, validation_loss,
                                                seconds))  # fmt: skip
        if epoch_report is not None and self.on_epoch is not None:
            self.on_epoch(epoch_report)

    def _end_epoch(self, validation_loss: float | None) -> EpochReport:
        """Record the finished epoch and keep its weights if they are the best so far."""
        epoch = self.position.step // self.steps_per_epoch
        loss = self.position.loss_sum / self.steps_per_epoch
        report = EpochReport(epoch, self.config.epochs, loss, validation_loss, self.position.epoch_seconds)
        score = validation_loss if validation_loss is not None else loss
        if all(score < bundle.selection_loss(entry) for entry in self._rivals(self.position.step)):
            bundle.write_weights(self.run_dir, self.model, self.info.model_config)
            self.best_step = self.position.step
        self.history.append(asdict(report))
        bundle.write_history(self.run_dir, self.history)
        self.position.loss_sum, self.position.epoch_seconds = 0.0, 0.0
        return report


class _StopRequests(keras.callbacks.Callback):
    """Asks `should_stop` after every batch (it may pause there), and looks at the clock when there is a deadline
    (time.monotonic()); ends the fit once the optimizer step the batch belongs to is whole."""

    def __init__(self, should_stop, accumulation_steps: int, deadline: float | None = None):
        super().__init__()
        self.should_stop, self.accumulation_steps, self.deadline = should_stop, accumulation_steps, deadline
        self.requested = self.stopped = self.out_of_time = False
        self.steps_in_last_fit = 0
        self.on_step: Callable[[int], None] | None = None  # hears the steps done in the current fit

    def on_train_begin(self, logs=None):
        self.steps_in_last_fit = 0

    def on_train_batch_end(self, batch, logs=None):
        if self.should_stop is not None and not self.requested:
            self.requested = bool(self.should_stop())
        if self.deadline is not None and not self.requested and time.monotonic() >= self.deadline:
            self.requested = self.out_of_time = True
        if (batch + 1) % self.accumulation_steps == 0:  # the step's gradients are applied
            self.steps_in_last_fit += 1
            if self.on_step is not None:
                self.on_step(self.steps_in_last_fit)
            if self.requested:
                self.stopped = self.model.stop_training = True
