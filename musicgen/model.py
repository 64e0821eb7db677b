"""The network: token embedding -> stacked LSTM -> logits over the vocabulary."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the terminal
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from musicgen.settings import ModelConfig  # noqa: E402  (re-exported: the settings live without TensorFlow)


def build_model(config: ModelConfig, compute_dtype: str = "float32", fast_loop: bool = True) -> keras.Model:
    """A functional Keras model mapping ids (batch, time) to logits (batch, time, vocabulary).

    compute_dtype "bfloat16" runs the matrix products in bfloat16 (weights, LSTM state and logits stay float32);
    fast_loop False runs Keras's own LSTM loop. The weights are the same either way.
    """
    policy = "mixed_bfloat16" if compute_dtype == "bfloat16" else "float32"
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocabulary_size, config.embedding_size, name="embedding", dtype=policy)(ids)
    for layer in range(config.layers):
        x = LSTM(config.units, return_sequences=True, name=f"lstm_{layer}", dtype=policy, fast_loop=fast_loop)(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{layer}", dtype=policy)(x)
    logits = keras.layers.Dense(config.vocabulary_size, name="logits", dtype="float32")(x)
    return keras.Model(ids, logits, name="musicgen_lstm")


def lstm_cell(z: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """New (h, c) of an LSTM cell from its summed gate inputs z, in Keras's gate order (input, forget, cell, output)."""
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


class LSTM(keras.layers.LSTM):
    """keras.layers.LSTM (same weights, same results) with a faster loop and backward pass on CPU.

    See `lstm_sequence`. The class keeps the name LSTM so that weight files keep their paths; fast_loop False
    (or masks, dropout inside the cell, going backwards) runs Keras's loop.
    """

    def __init__(self, *args, fast_loop: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fast_loop = fast_loop

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not self.fast_loop or mask is not None or self.go_backwards or self.dropout or self.recurrent_dropout:
            return super().inner_loop(sequences, initial_state, mask, training)
        cell, low = self.cell, self.compute_dtype
        weights = [tf.cast(w, "float32") for w in (cell.kernel, cell.recurrent_kernel, cell.bias)]
        start = [tf.cast(state, "float32") for state in initial_state]
        time_major = tf.transpose(tf.cast(sequences, "float32"), [1, 0, 2])
        hs, c = lstm_sequence(time_major, *weights, *start, product_dtype=tf.as_dtype(low))
        outputs = tf.cast(tf.transpose(hs, [1, 0, 2]), low)
        return outputs[:, -1], outputs, [outputs[:, -1], tf.cast(c, low)]


def _product(a: tf.Tensor, b: tf.Tensor, dtype: tf.DType, **options) -> tf.Tensor:
    """a @ b with the operands in `dtype` (float32 or bfloat16) and a float32 result."""
    return tf.cast(tf.matmul(tf.cast(a, dtype), tf.cast(b, dtype), **options), "float32")


def lstm_sequence(inputs, kernel, recurrent_kernel, bias, h0, c0, product_dtype=tf.float32):
    """All hidden states (time, batch, units) and the last cell state of an LSTM over time-major inputs.

    Forward: the input product of all time steps is one large matrix product before the loop, which then only
    multiplies the state. Backward (written out, not traced through the loop): the loop only carries the state
    gradients, one small product a step; the weight and input gradients are three large products after it.
    Products run in `product_dtype`; states, gates and gradients stay float32.
    """

    @tf.custom_gradient
    def run(inputs, kernel, recurrent_kernel, bias, h0, c0):
        steps, batch, width = tf.unstack(tf.shape(inputs))
        flat_inputs = tf.reshape(inputs, [-1, width])
        input_products = tf.reshape(_product(flat_inputs, kernel, product_dtype) + bias, [steps, batch, -1])
        hs, c_last, factors = _forward_loop(input_products, tf.cast(recurrent_kernel, product_dtype), h0, c0)

        def gradient(d_hs, d_c_last):
            d_c_last = tf.zeros_like(c0) if d_c_last is None else d_c_last
            d_gates, d_h0, d_c0 = _backward_loop(d_hs, d_c_last, factors, tf.cast(recurrent_kernel, product_dtype))
            flat = tf.reshape(d_gates, [steps * batch, -1])
            previous_hs = tf.reshape(tf.concat([h0[None], hs[:-1]], 0), [steps * batch, -1])
            return (
                tf.reshape(_product(flat, kernel, product_dtype, transpose_b=True), tf.shape(inputs)),
                _product(flat_inputs, flat, product_dtype, transpose_a=True),
                _product(previous_hs, flat, product_dtype, transpose_a=True),
                tf.reduce_sum(flat, 0),
                d_h0,
                d_c0,
            )

        return (hs, c_last), gradient

    return run(inputs, kernel, recurrent_kernel, bias, h0, c0)


def _forward_loop(input_products, recurrent_kernel, h0, c0):
    """Hidden states of every step, the last cell state, and what the backward pass needs of every step.

    The backward factors are computed here, on one step's small tensors while they are in cache, rather than
    afterwards in passes over whole (time, batch, 4 x units) tensors, which cost more than the products.
    """
    steps, dtype = tf.shape(input_products)[0], recurrent_kernel.dtype

    def step(t, h, c, hs, gate_factors, state_factors, forget_gates):
        z = input_products[t] + tf.cast(tf.matmul(tf.cast(h, dtype), recurrent_kernel), "float32")
        i, f, g, o = tf.split(z, 4, axis=-1)
        i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
        new_c = f * c + i * g
        tanh_c = tf.tanh(new_c)
        h = o * tanh_c
        # d z / d(c, c, c, h) for the gates i, f, g, o; d c / d h through h = o * tanh(c)
        gates = tf.concat([g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], -1)
        arrays = (hs.write(t, h), gate_factors.write(t, gates), state_factors.write(t, o * (1 - tanh_c * tanh_c)))
        return t + 1, h, new_c, *arrays, forget_gates.write(t, f)

    arrays = [tf.TensorArray("float32", size=steps) for _ in range(4)]
    _, _, c, hs, *factors = tf.while_loop(lambda t, *_: t < steps, step, (0, h0, c0, *arrays))
    return hs.stack(), c, factors


def _backward_loop(d_hs, d_c_last, factors, recurrent_kernel):
    """Gradients of the gate inputs of every step, and of the initial h and c: a few element-wise products and
    one matrix product a step."""
    gate_factors, state_factors, forget_gates = factors
    steps, dtype = tf.shape(d_hs)[0], recurrent_kernel.dtype

    def step(t, d_h, d_c, d_gates):
        d_h = d_h + d_hs[t]
        d_c = d_c + d_h * state_factors.read(t)
        d_z = tf.concat([d_c, d_c, d_c, d_h], -1) * gate_factors.read(t)
        d_h = tf.cast(tf.matmul(tf.cast(d_z, dtype), recurrent_kernel, transpose_b=True), "float32")
        return t - 1, d_h, d_c * forget_gates.read(t), d_gates.write(t, d_z)

    start = (steps - 1, tf.zeros_like(d_hs[0]), d_c_last, tf.TensorArray("float32", size=steps))
    _, d_h0, d_c0, d_gates = tf.while_loop(lambda t, *_: t >= 0, step, start)
    return d_gates.stack(), d_h0, d_c0


SCORING_CHUNK = 512  # time steps read per call while scoring; the LSTM state carries over to the next chunk
SCORING_TOKENS = 8192  # pieces x time steps per call: bounds scoring memory (~50 MB for 2 x 256 units)


def chunked_logits(model: keras.Model, pieces, chunk_length: int = SCORING_CHUNK, batch_tokens: int = SCORING_TOKENS):
    """Yield (piece index, first position, logits (positions, vocabulary) float32) for every chunk of every piece.

    Memory stays bounded whatever the piece lengths: pieces of similar length are read together, chunk by chunk,
    each chunk continuing from the LSTM state the one before it ended in. Chunks of a piece come in order.
    """
    step = _continue_function(model)
    for group in _similar_length_groups(pieces, chunk_length, batch_tokens):
        ids = np.zeros((len(group), max(len(pieces[index]) for index in group)), np.int32)  # padding: never read
        for row, index in enumerate(group):
            ids[row, : len(pieces[index])] = pieces[index]
        states = [(np.zeros((len(group), units), np.float32),) * 2 for units in _lstm_units(model)]
        for start in range(0, ids.shape[1], chunk_length):
            logits, states = step(ids[:, start : start + chunk_length], states)
            logits = logits.numpy()
            for row, index in enumerate(group):
                if start < len(pieces[index]):
                    yield index, start, logits[row, : len(pieces[index]) - start]


def _similar_length_groups(pieces, chunk_length: int, batch_tokens: int) -> list[list[int]]:
    """Indices of the pieces, shortest first, in groups of at most batch_tokens // (chunk time steps) pieces."""
    groups: list[list[int]] = []
    for index in sorted(range(len(pieces)), key=lambda i: len(pieces[i])):
        width = max(1, batch_tokens // max(1, min(len(pieces[index]), chunk_length)))
        if groups and len(groups[-1]) < width:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def _lstm_units(model: keras.Model) -> list[int]:
    return [layer.units for layer in model.layers if isinstance(layer, keras.layers.LSTM)]


def _continue_function(model: keras.Model):
    """A compiled step: (ids (batch, time), [(h, c) per LSTM layer]) -> (logits, new states), no dropout."""
    layers = [layer for layer in model.layers if not isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout))]

    @tf.function(reduce_retracing=True)
    def step(ids, states):
        x, new_states = ids, []
        for layer in layers:
            if isinstance(layer, keras.layers.LSTM):
                _, x, state = layer.inner_loop(x, list(states[len(new_states)]), None)
                new_states.append(tuple(tf.cast(s, "float32") for s in state))
            else:
                x = layer(x)
        return tf.cast(x, "float32"), new_states

    return step
