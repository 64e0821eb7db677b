"""Training speed: our set-up (batch 64, XLA) against plain model.fit with Keras defaults, same model and data.

Run: .venv/bin/python -m benchmarks.training_speed [MIDI_FOLDER]   (default: samples/bach)
"""

import sys
import time
from pathlib import Path

import keras

from musicgen.corpus import corpus_to_ids, load_folder
from musicgen.dataset import make_dataset
from musicgen.model import ModelConfig, build_model
from musicgen.tokens import Vocabulary
from musicgen.train import TrainConfig

STEPS = 40


def tokens_per_second(sequences, vocabulary_size: int, batch_size: int, jit_compile, sequence_length: int) -> float:
    model = build_model(ModelConfig(vocabulary_size=vocabulary_size))
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    data = make_dataset(sequences, sequence_length, batch_size, seed=0).repeat()
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)  # compile
    started = time.perf_counter()
    model.fit(data, steps_per_epoch=STEPS, epochs=1, verbose=0)
    return batch_size * sequence_length * STEPS / (time.perf_counter() - started)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("samples/bach")
    vocabulary = Vocabulary()
    sequences = corpus_to_ids(load_folder(folder), vocabulary)
    ours = TrainConfig()
    length = ours.sequence_length
    plain = tokens_per_second(sequences, len(vocabulary), 32, "auto", length)  # Keras defaults
    tuned = tokens_per_second(sequences, len(vocabulary), ours.batch_size, ours.jit_compile, length)
    print(f"{len(sequences)} files, sequence length {length}, {STEPS} steps each")
    print(f"ours {tuned:,.0f} tokens/s, plain model.fit {plain:,.0f} tokens/s: {tuned / plain:.1f}x faster")


if __name__ == "__main__":
    main()
