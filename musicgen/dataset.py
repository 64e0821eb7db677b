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
