"""The settings of a model and of its training, as plain data: no TensorFlow here.

They are saved in every bundle's config.json and read back from uploaded files before
TensorFlow loads, so each range is written once, here. `musicgen.model` and
`musicgen.train` re-export these classes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from musicgen.validation import check_ranges

PRECISIONS = ("auto", "float32", "bfloat16")
RETIRED_SETTINGS = {"jit_compile"}  # in bundles of earlier versions; XLA measured slower than the loop in model.LSTM
EPOCH_RANGE = (1, 1000)  # epochs of a run, so also the epoch numbers of a history
TEMPERATURE_RANGE = (0.0, 3.0)  # sampling temperatures: musicgen.sample.SampleConfig and evaluation.json


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the LSTM; saved in every bundle as config.json."""

    vocabulary_size: int = 200  # number of token ids, 4..4096
    embedding_size: int = 64  # width of the token embedding, 4..1024
    layers: int = 2  # stacked LSTM layers, 1..4
    units: int = 256  # LSTM units per layer, 8..1024
    dropout: float = 0.2  # dropout between layers while training, 0..0.8

    def __post_init__(self) -> None:
        check_ranges(
            self,
            vocabulary_size=(4, 4096),
            embedding_size=(4, 1024),
            layers=(1, 4),
            units=(8, 1024),
            dropout=(0.0, 0.8),
        )

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from JSON data, refusing unknown or missing fields."""
        names = {field.name for field in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"the model settings must have exactly the fields {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every field but `epochs` names the run folder, so asking again resumes."""

    epochs: int = 20  # total epochs of the run, 1..1000
    sequence_length: int = 128  # tokens the LSTM reads per training window, 8..2048
    batch_size: int = 64  # windows per step, 1..1024
    learning_rate: float = 2e-3  # Adam step size, 1e-5..0.1
    validation_share: float = 0.1  # share of files held out for validation, 0..0.5
    transpose_semitones: int = 0  # augmentation: shift pitches by up to this many semitones, 0..12
    seed: int = 0  # seeds the file split, the shuffling and the initial weights
    precision: str = "auto"  # matrix products in "float32" or "bfloat16"; "auto": bfloat16 where the CPU has it
    # Steps each batch is split into, their gradients averaged before the weights change: the same training in
    # less memory (musicgen.jobs.plan_request chooses it from the memory budget), 1..1024, dividing batch_size.
    accumulation_steps: int = 1
    # Optimizer steps between checkpoints (saved state, validation loss, musicgen.train's on_checkpoint), so that
    # a long epoch is saved and scored several times; 0: once per epoch, at its end. 0..1000000.
    checkpoint_steps: int = 0
    # When to stop before the last epoch, and which weights to keep: none changes what the steps learn, so none names
    # the run folder.
    time_budget_seconds: int = 0  # seconds of one call of train (its first epoch always ends), 0..86400; 0: none
    patience_steps: int = 0  # stop once the best validation loss is this many steps old, 0..1000000; 0: never
    # The weights kept (and patience) count the best epoch ending at this step or later, once there is one: a model
    # that must move away from where it started is not kept at its first steps. 0..1000000.
    best_after_steps: int = 0

    def __post_init__(self) -> None:
        check_ranges(
            self,
            epochs=EPOCH_RANGE,
            sequence_length=(8, 2048),
            batch_size=(1, 1024),
            learning_rate=(1e-5, 0.1),
            validation_share=(0.0, 0.5),
            transpose_semitones=(0, 12),
            seed=(0, 2**31 - 1),
            accumulation_steps=(1, 1024),
            checkpoint_steps=(0, 1_000_000),
            time_budget_seconds=(0, 86_400),
            patience_steps=(0, 1_000_000),
            best_after_steps=(0, 1_000_000),
        )
        if self.batch_size % self.accumulation_steps:
            raise ValueError(
                f"accumulation_steps must divide batch_size, got {self.accumulation_steps} and {self.batch_size}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Rebuild from JSON data: retired settings of earlier versions are dropped, unknown ones refused."""
        if not isinstance(data, dict):
            raise ValueError("the training settings must be a set of named values")
        data = {name: value for name, value in data.items() if name not in RETIRED_SETTINGS}
        unknown = set(data) - {field.name for field in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return cls(**data)


# Fine-tuning: a training that starts from a trained model. Chosen with benchmarks/finetune.py --tuning (airs of
# book 5 to test, so that book 6, which the README reports, stays unseen; figures in the README): from the base, 4
# training airs were memorised within 5-18 steps (validation best there, then rising while the training loss fell
# to 0.1-0.4), whatever the learning rate, so early stopping does most of the work and ends it in about 30 s.
FINE_TUNING_LEARNING_RATE = 1e-3  # Adam step size; 3e-4 and 2e-3 scored within 2% of it, 3e-4 composed less like them
FINE_TUNING_TRANSPOSE_SEMITONES = 0  # 2 scored 1.6% better but moved the pieces' pitch classes away from the music
FINE_TUNING_SECONDS = 180  # the time budget of one training call
FINE_TUNING_PATIENCE_STEPS = 150  # stop once validation has not improved for this many steps
# Validation alone keeps the weights of the first steps, which compose like the base (chords, 3 notes a beat) from a
# fresh start, and mostly like the airs from an opening of the airs (musicgen.sample.OPENING_NOTES), which is how a
# trained model's pieces start. Counting the best from step 10 on made 5 airs' pieces keep the airs' polyphony and
# range throughout, for 2% more held-out loss; from step 40 on, even fresh starts did, for 25-45% more.
FINE_TUNING_BEST_AFTER_STEPS = 10
FINE_TUNING_TOKENS_PER_SECOND = 25_000  # a 2 x 256 base learning 5 airs on 2 cores, measured: plans the epochs


def fine_tuning(config: TrainConfig, windows: int) -> TrainConfig:
    """The settings of a training that starts from a trained model: its learning rate, transposition (none unless
    asked for), early stopping and time budget, and as many epochs (at least those asked for) as fit the budget.
    `windows`: the training windows of the music (musicgen.dataset.window_starts)."""
    steps_per_epoch = max(1, windows // min(config.batch_size, max(1, windows)))
    fitting_steps = FINE_TUNING_SECONDS * FINE_TUNING_TOKENS_PER_SECOND / (config.batch_size * config.sequence_length)
    epochs = min(max(config.epochs, math.ceil(fitting_steps / steps_per_epoch)), EPOCH_RANGE[1])
    return replace(
        config,
        epochs=epochs,
        learning_rate=FINE_TUNING_LEARNING_RATE,
        transpose_semitones=max(config.transpose_semitones, FINE_TUNING_TRANSPOSE_SEMITONES),
        time_budget_seconds=FINE_TUNING_SECONDS,
        patience_steps=FINE_TUNING_PATIENCE_STEPS,
        best_after_steps=FINE_TUNING_BEST_AFTER_STEPS,
    )


@dataclass(frozen=True)
class EpochReport:
    """What the progress hook hears after each epoch; one entry of a bundle's history.json."""

    epoch: int  # 1-based number of the finished epoch, 1..1000
    epochs: int  # epochs asked for in this run, 1..1000
    loss: float  # mean training loss, nats per token
    validation_loss: float | None  # None when no file was held out
    seconds: float  # time this epoch took


@dataclass(frozen=True)
class CheckpointReport:
    """What the checkpoint hook hears after every checkpoint (each `checkpoint_steps` steps and each epoch's end)."""

    step: int  # optimizer steps done in the run
    steps_per_epoch: int  # optimizer steps in one pass over the training windows
    loss: float  # mean training loss of the steps since the previous checkpoint, nats per token
    validation_loss: float | None  # None when no file was held out
    seconds: float  # training time of the steps since the previous checkpoint

    @property
    def epochs(self) -> float:
        """Epochs done, with the fraction of the current one."""
        return self.step / self.steps_per_epoch
