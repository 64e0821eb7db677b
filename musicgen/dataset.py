"""Training windows streamed with tf.data from token arrays, split by file.

Only the concatenated token stream of each split and one start offset per window are
held in memory; the windows themselves are cut batch by batch, so memory grows with the
corpus, not with sequence length x corpus size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split


def split_by_file(
    sequences: Sequence[np.ndarray], validation_share: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole files go to training or to validation, never both; at least one file each when possible."""
    if len(sequences) < 2 or validation_share <= 0:
        return list(sequences), []
    validation_count = min(max(1, round(len(sequences) * validation_share)), len(sequences) - 1)
    train_index, validation_index = train_test_split(
        np.arange(len(sequences)), test_size=validation_count, random_state=seed
    )
    return [sequences[i] for i in sorted(train_index)], [sequences[i] for i in sorted(validation_index)]


def window_starts(stream_length: int, sequence_length: int, stride: int) -> np.ndarray:
    """Start offsets of windows of sequence_length + 1 tokens (inputs plus the next-token target)."""
    last_start = stream_length - sequence_length - 1
    if last_start < 0:
        return np.zeros(0, np.int64)
    return np.arange(0, last_start + 1, stride, dtype=np.int64)


def make_dataset(
    sequences: Sequence[np.ndarray],
    sequence_length: int,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    transpose_tables: np.ndarray | None = None,
    accumulation_steps: int = 1,
) -> tf.data.Dataset:
    """Batches of (inputs, targets), each (batch, sequence_length) int32; targets are inputs moved one step.

    transpose_tables: (shifts, vocabulary) id maps; each window picks one at random.
    accumulation_steps: each shuffled batch comes as this many equal parts (for gradient accumulation); the
    windows of an unfinished last batch are left out, so every optimizer step sees a whole batch.
    """
    stream = tf.constant(np.concatenate(list(sequences)).astype(np.int32))
    stride = sequence_length // 2 if shuffle else sequence_length
    starts = window_starts(int(stream.shape[0]), sequence_length, max(1, stride))
    dataset = tf.data.Dataset.from_tensor_slices(starts)
    if shuffle:
        dataset = dataset.shuffle(len(starts), seed=seed, reshuffle_each_iteration=True)
    if shuffle and accumulation_steps > 1:
        if len(starts) < batch_size:
            raise ValueError(f"{len(starts)} training windows cannot make one batch of {batch_size} to accumulate")
        dataset = dataset.take(len(starts) // batch_size * batch_size)
    part = batch_size // accumulation_steps
    dataset = dataset.batch(part, drop_remainder=shuffle and len(starts) >= batch_size)
    offsets = tf.range(sequence_length + 1, dtype=tf.int64)

    def cut_windows(batch_starts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        windows = tf.gather(stream, batch_starts[:, None] + offsets[None, :])
        if transpose_tables is not None:
            windows = _transpose_randomly(windows, tf.constant(transpose_tables, tf.int32))
        return windows[:, :-1], windows[:, 1:]

    return dataset.map(cut_windows, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _transpose_randomly(windows: tf.Tensor, tables: tf.Tensor) -> tf.Tensor:
    """Map each window through one randomly chosen id table."""
    choice = tf.random.uniform([tf.shape(windows)[0]], 0, tf.shape(tables)[0], dtype=tf.int32)
    return tf.gather(tf.gather(tables, choice), windows, batch_dims=1)


class TrainingWindows:
    """The shuffled training batches of a run, addressable by optimizer step, so that a run resumes mid-epoch.

    Epoch e visits the windows (overlapping by half) in the e-th order of tf.data's shuffle seeded by `seed` (the
    orders `make_dataset` gives one epoch after another, so a run trains exactly as it did with it), in whole
    batches; the windows of an unfinished last batch wait for a later epoch's order. Fewer windows than a batch
    make one smaller batch. With transpose tables, each
    window's table is drawn from the same seed, so a resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, sequences, sequence_length: int, batch_size: int, seed: int, transpose_tables=None):
        stream = np.concatenate(list(sequences)).astype(np.int32)
        self.starts = window_starts(len(stream), sequence_length, max(1, sequence_length // 2))
        self.stream = tf.constant(stream)  # once, so that every step's dataset shares it
        self.sequence_length, self.batch_size, self.seed = sequence_length, min(batch_size, len(self.starts)), seed
        self.shifts = 1 if transpose_tables is None else len(transpose_tables)
        self.transpose_tables = None if transpose_tables is None else tf.constant(transpose_tables, tf.int32)
        self._plan_epoch, self._plan = -1, (self.starts, self.starts)
        self._orders, self._orders_given = None, 0
        if not len(self.starts):
            raise ValueError(f"the training music is shorter than one window of {sequence_length} tokens")
        self.steps_per_epoch = len(self.starts) // self.batch_size

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The window starts of this epoch's whole batches in their order, and each window's transposition."""
        order = self._epoch_order(epoch)[: self.steps_per_epoch * self.batch_size]
        shifts = np.random.default_rng([self.seed, epoch]).integers(0, self.shifts, len(order))
        return self.starts[order], shifts

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """The shuffle's order of the windows in this epoch (orders are drawn in turn: going back starts over)."""
        if self._orders is None or epoch < self._orders_given:
            indices = tf.data.Dataset.range(len(self.starts))
            self._orders = indices.shuffle(len(self.starts), seed=self.seed, reshuffle_each_iteration=True)
            self._orders = self._orders.batch(len(self.starts))
            self._orders_given = 0
        while True:
            order = next(iter(self._orders)).numpy()  # each new iterator reshuffles, as each epoch of fit did
            self._orders_given += 1
            if self._orders_given > epoch:
                return order

    def batches(self, first_step: int, steps: int, parts: int = 1) -> tf.data.Dataset:
        """Batches of (inputs, targets) for optimizer steps first_step .. first_step + steps - 1, each in `parts`
        equal parts (for gradient accumulation)."""
        plans = [self._step_plan(step) for step in range(first_step, first_step + steps)]
        starts = np.concatenate([plan[0] for plan in plans])
        shifts = np.concatenate([plan[1] for plan in plans])
        dataset = tf.data.Dataset.from_tensor_slices((starts, shifts)).batch(self.batch_size // parts)
        return dataset.map(self._cut_windows, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def _step_plan(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._plan_epoch != epoch:
            self._plan_epoch, self._plan = epoch, self.epoch_plan(epoch)
        cut = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self._plan[0][cut], self._plan[1][cut]

    def _cut_windows(self, starts: tf.Tensor, shifts: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        offsets = tf.range(self.sequence_length + 1, dtype=tf.int64)
        windows = tf.gather(self.stream, starts[:, None] + offsets[None, :])
        if self.transpose_tables is not None:
            windows = tf.gather(tf.gather(self.transpose_tables, shifts), windows, batch_dims=1)
        return windows[:, :-1], windows[:, 1:]
