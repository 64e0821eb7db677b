"""What each piece of work costs in memory, and the budget the app process lives within.

The hosted demo is one process for every visitor (Streamlit Community Cloud gives the
process and its children about 2.7 GB; past that the container restarts and every visitor
loses their work). `MemoryBudget` splits MUSICGEN_MEMORY_MB into fixed shares, so that no
request can take memory another part of the app needs:

- the process itself: Python, Streamlit, the built-in styles' models and TensorFlow, which
  loads with the first training (`BASE_MEGABYTES`; composing needs no TensorFlow);
- composing and rendering: every FluidSynth process holds the whole soundfont, so at most
  `renders` run at once (`RENDER_MEGABYTES` each);
- visitors' own models held loaded (`model_megabytes`; the model cache drops the least
  recently used ones to stay in it);
- training: the rest. A training's peak is estimated before it starts; one whose batch does
  not fit the share in one step runs it in smaller steps whose gradients add up (the same
  training in less memory), and trainings whose peaks together would pass the share wait.

The formulas are fitted to peak RSS measured in child processes (benchmarks/memory.py prints
measured against estimated) and carry a safety margin. This module imports no TensorFlow:
the page uses it to offer only settings that can run. Model settings are read by attribute
(layers, units, embedding_size, vocabulary_size), as `musicgen.model.ModelConfig` has them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from musicgen.boundary import parameter_count
from musicgen.validation import check_ranges, number_from_environment

MEMORY_VARIABLE = "MUSICGEN_MEMORY_MB"
MEGABYTE = 1_000_000
BASE_MEGABYTES = 1000  # the app process with TensorFlow, Streamlit and the built-in model composing (measured 875)
RENDER_MEGABYTES = 200  # one FluidSynth process with the General MIDI soundfont loaded (measured 174)
COMPOSE_MEGABYTES = 150  # compiling and running a sampler for a new variations count (measured 20-130)
MIN_TRAINING_MEGABYTES = 300  # a budget that leaves training less than this is refused at start
TOTAL_RANGE = (1500, 1_000_000)  # what MUSICGEN_MEMORY_MB may be, in MB

# Training peak over the process before it (bytes), fitted to 28 measured runs (1-4 layers, 32-1024 units,
# sequence length 64-512, batch 8-64, float32 and bfloat16): within 0.8x-1.24x of the measured peaks.
# The fit's fixed part was 80 MB; a run beside the whole test suite needed 120 MB more (tf.data buffers and
# allocator pools grow when the machine is busy), so it is 200.
TRAINING_FIXED_BYTES = 200 * MEGABYTE
BYTES_PER_PARAMETER = 20  # weights, gradients, Adam's two moments
BYTES_PER_ACCUMULATED_PARAMETER = 8  # with accumulation steps: the accumulated gradients and their average
BYTES_PER_UNIT_TOKEN = 80  # LSTM activations kept for the backward pass: per token, layer and unit
BYTES_PER_EMBEDDED_TOKEN = 64  # embedding outputs and their gradients: per token and embedding width
BYTES_PER_CORPUS_TOKEN = 16  # the token stream held by tf.data, with window offsets
# Logits, their softmax and gradients, per token and vocabulary entry: the fit's vocabulary was always 187, so
# this part of the cost could not be told apart there; it is added on top for models of larger vocabularies.
BYTES_PER_LOGIT = 16
SAFETY_MARGIN = 1.3  # the largest measured peak was 1.24x the fitted formula

# A model held loaded for composing: measured at 10.4 bytes a parameter and 80 MB more when it was a Keras model
# with compiled sampling loops; its NumPy weights now take about 8 bytes a parameter, so this is generous.
COMPOSER_BYTES_PER_PARAMETER = 11
COMPOSER_FIXED_BYTES = 100 * MEGABYTE


def training_bytes(
    model, batch_size: int, sequence_length: int, corpus_tokens: int = 0, accumulating: bool = False
) -> int:
    """Estimated peak memory of training this model on steps of `batch_size` windows (`accumulating`: their
    gradients added up over several steps)."""
    tokens = batch_size * sequence_length
    per_parameter = BYTES_PER_PARAMETER + (BYTES_PER_ACCUMULATED_PARAMETER if accumulating else 0)
    estimate = (
        TRAINING_FIXED_BYTES
        + per_parameter * parameter_count(model)
        + BYTES_PER_UNIT_TOKEN * tokens * model.layers * model.units
        + BYTES_PER_EMBEDDED_TOKEN * tokens * model.embedding_size
        + BYTES_PER_CORPUS_TOKEN * corpus_tokens
        + BYTES_PER_LOGIT * tokens * model.vocabulary_size
    )
    return round(SAFETY_MARGIN * estimate)


def composer_bytes(model) -> int:
    """Estimated memory of a model held loaded for composing."""
    return COMPOSER_FIXED_BYTES + COMPOSER_BYTES_PER_PARAMETER * parameter_count(model)


@dataclass(frozen=True)
class MemoryBudget:
    """The memory the app process (and the programs it starts) may use, split into shares."""

    total_megabytes: int = 2500  # the whole process, TOTAL_RANGE MB; Community Cloud allows about 2700
    renders: int = 2  # FluidSynth processes at once, 1..16
    model_megabytes: int = 300  # visitors' own models held loaded, 100..100000 MB

    def __post_init__(self) -> None:
        check_ranges(self, total_megabytes=TOTAL_RANGE, renders=(1, 16), model_megabytes=(100, 100_000))
        if self.training_megabytes < MIN_TRAINING_MEGABYTES:
            needed = self.total_megabytes - self.training_megabytes + MIN_TRAINING_MEGABYTES
            raise ValueError(
                f"{self.total_megabytes} MB is too little for the app and a training: give at least {needed}"
            )

    @property
    def training_megabytes(self) -> int:
        """What is left for trainings once the process, renders and loaded models have their shares."""
        fixed = BASE_MEGABYTES + COMPOSE_MEGABYTES + self.renders * RENDER_MEGABYTES + self.model_megabytes
        return self.total_megabytes - fixed

    @property
    def training_bytes(self) -> int:
        return self.training_megabytes * MEGABYTE

    @property
    def model_bytes(self) -> int:
        return self.model_megabytes * MEGABYTE

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> MemoryBudget:
        """The budget of MUSICGEN_MEMORY_MB (default 2500), refused in one sentence when it cannot work."""
        environ = os.environ if environ is None else environ
        text = environ.get(MEMORY_VARIABLE, "").strip()
        if not text:
            return cls()
        total = number_from_environment(MEMORY_VARIABLE, text, TOTAL_RANGE)
        try:
            return cls(total_megabytes=total)
        except ValueError as error:  # the shares leave too little for training
            raise ValueError(f"{MEMORY_VARIABLE} cannot be used: {error}") from None


def accumulation_steps(model, batch_size: int, sequence_length: int, corpus_tokens: int, budget_bytes: int) -> int:
    """The fewest steps a batch can be split into (each a whole share of it) so that training fits the budget;
    0 when even one window at a time does not fit."""
    for steps in range(1, batch_size + 1):
        if batch_size % steps == 0:
            if training_bytes(model, batch_size // steps, sequence_length, corpus_tokens, steps > 1) <= budget_bytes:
                return steps
    return 0


def sequence_lengths_that_fit(model, lengths: list[int], corpus_tokens: int, budget_bytes: int) -> list[int]:
    """The sequence lengths at which this model can train on this much music within the budget, one window
    per step at worst."""
    return [length for length in lengths if training_bytes(model, 1, length, corpus_tokens, True) <= budget_bytes]
