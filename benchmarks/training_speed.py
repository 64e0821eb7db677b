"""Training speed: our set-up against plain model.fit with Keras defaults, on the same network and data.

Plain: keras.layers.LSTM, batch 32, float32, Keras's default compile (the three-line tutorial).
Ours: musicgen.model (our LSTM loop and backward pass), batch 64, in float32 and, where the CPU multiplies
bfloat16 natively, in bfloat16. The set-ups take turns, a few steps each, for several rounds, so that a
neighbour who comes or goes slows all of them alike; each round gives a ratio, and the median ratio is
reported with its range over the rounds.

Run: .venv/bin/python -m benchmarks.training_speed [MIDI_FOLDER] [--rounds 8]   (default: samples/bach)
The float32 path of CPUs without AVX-512 on one that has it: ONEDNN_MAX_CPU_ISA=AVX2 (checked below).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np

from musicgen.corpus import corpus_to_ids, load_folder
from musicgen.dataset import make_dataset
from musicgen.model import ModelConfig
from musicgen.tokens import Vocabulary
from musicgen.train import TrainConfig, compiled_model
from musicgen.training_path import TrainingPath, bfloat16_is_native, cpu_flags

STEPS_PER_TURN = 3
FLAG_NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}


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


class Setup:
    """A compiled model and an endless stream of its batches; `turn` trains a few steps and returns tokens/s."""

    def __init__(self, name: str, model: keras.Model, sequences, batch_size: int, sequence_length: int):
        self.name, self.model = name, model
        self.batches = iter(make_dataset(sequences, sequence_length, batch_size, seed=0).repeat())
        self.tokens_per_step = batch_size * sequence_length
        self.turn()  # compile and warm up

    def turn(self) -> float:
        batches = [next(self.batches) for _ in range(STEPS_PER_TURN)]
        started = time.perf_counter()
        for inputs, targets in batches:
            self.model.train_on_batch(inputs, targets)
        return STEPS_PER_TURN * self.tokens_per_step / (time.perf_counter() - started)


def describe_cpu() -> str:
    """The flags that choose the path, and the oneDNN ISA cap if one is set."""
    flags = cpu_flags()
    have = ", ".join(f"{name} {'yes' if flag in flags else 'no'}" for flag, name in FLAG_NAMES.items())
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA")
    return f"CPU: {have}" + (f"; oneDNN capped at {cap} (ONEDNN_MAX_CPU_ISA)" if cap else "")


def onednn_isa() -> str:
    """The instruction set oneDNN really uses, from its verbose output in a child process (checks the cap works)."""
    program = "import tensorflow as tf; tf.matmul(tf.ones((64, 64)), tf.ones((64, 64)))"
    environment = {**os.environ, "ONEDNN_VERBOSE": "1"}
    output = subprocess.run([sys.executable, "-c", program], env=environment, capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if ",isa:" in line]
    return lines[0].split(",isa:")[1] if lines else "unknown (no oneDNN verbose output)"


def interleaved_rounds(setups: list[Setup], rounds: int) -> dict[str, list[float]]:
    """tokens/s of every set-up in every round; the set-ups take turns within a round."""
    speeds = {setup.name: [] for setup in setups}
    for _ in range(rounds):
        for setup in setups:
            speeds[setup.name].append(setup.turn())
    return speeds


def report(speeds: dict[str, list[float]], baseline: str) -> None:
    """tokens/s of each set-up, then each ratio to the baseline on its own line (median, range over rounds)."""
    for name, values in speeds.items():
        print(f"{name}: median {np.median(values):,.0f} tokens/s (range {min(values):,.0f}-{max(values):,.0f})")
    base = np.array(speeds[baseline])
    for name, values in speeds.items():
        if name != baseline:
            ratios = np.array(values) / base
            print(f"{name} against {baseline}, median of {len(base)} rounds (range {ratios.min():.2f}-"
                  f"{ratios.max():.2f}): {np.median(ratios):.2f}x faster")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="samples/bach", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    vocabulary = Vocabulary()
    sequences = corpus_to_ids(load_folder(args.folder), vocabulary)
    network, ours = ModelConfig(vocabulary_size=len(vocabulary)), TrainConfig()
    length = ours.sequence_length
    print(describe_cpu())
    print(f"oneDNN uses: {onednn_isa()}")
    plain = "plain model.fit (keras.layers.LSTM, batch 32, float32)"
    setups = [Setup(plain, plain_model(network), sequences, 32, length)]
    precisions = ["float32", "bfloat16"] if bfloat16_is_native() else ["float32"]
    for precision in precisions:
        model = compiled_model(network, ours, TrainingPath(precision, fast_loop=True))
        setups.append(Setup(f"ours ({precision}, batch {ours.batch_size})", model, sequences, ours.batch_size, length))
    print(f"{len(sequences)} files, sequence length {length}, {args.rounds} rounds of {STEPS_PER_TURN} steps each")
    report(interleaved_rounds(setups, args.rounds), plain)


if __name__ == "__main__":
    main()
