"""Training speed: our set-up against plain model.fit with Keras defaults, on the same network and data.

Ours: musicgen.model.LSTM (the input product taken out of the loop), batch 64, bfloat16 matrix products where
the CPU has them. Plain: keras.layers.LSTM, batch 32, float32, Keras's default compile.
Run: .venv/bin/python -m benchmarks.training_speed [MIDI_FOLDER]   (default: samples/bach)
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np

from musicgen.corpus import corpus_to_ids, load_folder
from musicgen.dataset import make_dataset
from musicgen.model import ModelConfig
from musicgen.tokens import Vocabulary
from musicgen.train import TrainConfig, compiled_model, compute_dtype

STEPS = 30


def plain_model(config: ModelConfig) -> keras.Model:
    """The same network written with stock Keras layers, compiled with Keras's defaults."""
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(config.vocabulary_size, config.embedding_size),
        ]
    )
    for _ in range(config.layers):
        model.add(keras.layers.LSTM(config.units, return_sequences=True))
        model.add(keras.layers.Dropout(config.dropout))
    model.add(keras.layers.Dense(config.vocabulary_size))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def tokens_per_second(model: keras.Model, sequences, batch_size: int, sequence_length: int) -> float:
    """Median training throughput over STEPS steps, after two steps of warm-up."""
    step_seconds = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            step_seconds.append(time.perf_counter() - self.started)

    data = make_dataset(sequences, sequence_length, batch_size, seed=0).repeat()
    model.fit(data, steps_per_epoch=STEPS + 2, epochs=1, verbose=0, callbacks=[StepTimer()])
    return batch_size * sequence_length / float(np.median(step_seconds[2:]))


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("samples/bach")
    vocabulary = Vocabulary()
    sequences = corpus_to_ids(load_folder(folder), vocabulary)
    network, ours = ModelConfig(vocabulary_size=len(vocabulary)), TrainConfig()
    length = ours.sequence_length
    plain = tokens_per_second(plain_model(network), sequences, 32, length)
    print(f"{len(sequences)} files, sequence length {length}, median of {STEPS} steps each")
    print(f"plain model.fit (keras.layers.LSTM, batch 32, float32): {plain:,.0f} tokens/s")
    precision = compute_dtype(ours.precision)
    if precision != "float32":  # what a CPU without bfloat16 gets
        exact_setup = compiled_model(network, replace(ours, precision="float32"))
        exact = tokens_per_second(exact_setup, sequences, ours.batch_size, length)
        print(f"ours in float32 (CPUs without bfloat16): {exact:,.0f} tokens/s, {exact / plain:.1f}x")
    tuned = tokens_per_second(compiled_model(network, ours), sequences, ours.batch_size, length)
    print(f"ours ({precision} products) {tuned:,.0f} tokens/s, plain model.fit {plain:,.0f} tokens/s: ", end="")
    print(f"{tuned / plain:.1f}x faster")


if __name__ == "__main__":
    main()
