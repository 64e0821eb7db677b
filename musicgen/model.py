"""The network: token embedding -> stacked LSTM -> logits over the vocabulary."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the terminal
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from musicgen.settings import ModelConfig  # noqa: E402  (re-exported: the settings live without TensorFlow)


def build_model(config: ModelConfig, compute_dtype: str = "float32") -> keras.Model:
    """A functional Keras model mapping ids (batch, time) to logits (batch, time, vocabulary).

    compute_dtype "bfloat16" runs the matrix products in bfloat16 (weights, LSTM state and logits stay float32);
    the weights are the same either way.
    """
    policy = "mixed_bfloat16" if compute_dtype == "bfloat16" else "float32"
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocabulary_size, config.embedding_size, name="embedding", dtype=policy)(ids)
    for layer in range(config.layers):
        x = LSTM(config.units, return_sequences=True, name=f"lstm_{layer}", dtype=policy)(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{layer}", dtype=policy)(x)
    logits = keras.layers.Dense(config.vocabulary_size, name="logits", dtype="float32")(x)
    return keras.Model(ids, logits, name="musicgen_lstm")


def lstm_cell(z: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """New (h, c) of an LSTM cell from its summed gate inputs z, in Keras's gate order (input, forget, cell, output)."""
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


class LSTM(keras.layers.LSTM):
    """keras.layers.LSTM (same weights, same results) with a faster loop on CPU.

    Keras multiplies the input by its kernel inside the loop, one time step at a time. Here that product is one
    large matrix product over all the steps before the loop, which then only multiplies the state; the state and
    gates stay float32 when the products run in bfloat16. The class keeps the name LSTM so that weight files
    keep their paths.
    """

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if mask is not None or self.go_backwards or self.dropout or self.recurrent_dropout:
            return super().inner_loop(sequences, initial_state, mask, training)
        cell, low = self.cell, self.compute_dtype
        recurrent_kernel = tf.cast(cell.recurrent_kernel, low)
        inputs = tf.einsum("bti,ij->tbj", tf.cast(sequences, low), tf.cast(cell.kernel, low))
        inputs = tf.cast(inputs, "float32") + tf.cast(cell.bias, "float32")

        def step(state, z):
            h, c = state
            return lstm_cell(z + tf.cast(tf.matmul(tf.cast(h, low), recurrent_kernel), "float32"), c)

        start = tuple(tf.cast(state, "float32") for state in initial_state)
        hs, cs = tf.scan(step, inputs, initializer=start)
        outputs = tf.cast(tf.transpose(hs, [1, 0, 2]), low)
        return outputs[:, -1], outputs, [tf.cast(hs[-1], low), tf.cast(cs[-1], low)]
