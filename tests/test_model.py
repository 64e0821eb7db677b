"""The network: our LSTM layer computes what keras.layers.LSTM computes; bfloat16 products keep the weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from musicgen.bundle import BundleInfo, load_bundle
from musicgen.model import LSTM, ModelConfig, build_model, chunked_logits
from musicgen.tokens import Vocabulary
from musicgen.train import TrainConfig, compute_dtype, cpu_has_bfloat16, train_sequences
from tests.conftest import TINY_MODEL

RANDOM = np.random.default_rng(7)


def outputs_and_gradients(layer, inputs, initial_state):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs, initial_state=initial_state)
        weighted = tf.reduce_sum(outputs * tf.range(1.0, outputs.shape[-1] + 1.0))
    return [outputs, *tape.gradient(weighted, [inputs, *layer.trainable_variables])]


def test_our_lstm_gives_the_outputs_and_gradients_of_keras_lstm():
    inputs = tf.constant(RANDOM.normal(size=(3, 11, 5)), tf.float32)
    initial_state = [tf.constant(RANDOM.normal(size=(3, 6)), tf.float32) for _ in range(2)]
    ours, theirs = LSTM(6, return_sequences=True), keras.layers.LSTM(6, return_sequences=True)
    ours(inputs), theirs(inputs)
    ours.set_weights([RANDOM.normal(size=w.shape) for w in theirs.get_weights()])
    theirs.set_weights(ours.get_weights())
    expected = outputs_and_gradients(theirs, inputs, initial_state)
    for got, want in zip(outputs_and_gradients(ours, inputs, initial_state), expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_the_last_cell_state_and_its_gradients_match_keras_lstm():
    inputs = tf.constant(RANDOM.normal(size=(2, 7, 3)), tf.float32)
    initial_state = [tf.constant(RANDOM.normal(size=(2, 5)), tf.float32) for _ in range(2)]
    ours = LSTM(5, return_state=True)
    theirs = LSTM(5, return_state=True, fast_loop=False)  # Keras's own loop
    ours(inputs), theirs(inputs)
    theirs.set_weights(ours.get_weights())
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(initial_state)
            _, h, c = layer(inputs, initial_state=initial_state)
            total = tf.reduce_sum(h * 2.0) + tf.reduce_sum(c * c)
        results.append([h, c, *tape.gradient(total, [*initial_state, *layer.trainable_variables])])
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_bfloat16_products_keep_the_weights_and_nearly_the_logits():
    config = ModelConfig(vocabulary_size=40, embedding_size=8, layers=2, units=32)
    exact, fast = build_model(config), build_model(config, "bfloat16")
    fast.set_weights(exact.get_weights())
    assert [w.dtype for w in fast.weights] == [w.dtype for w in exact.weights] == ["float32"] * len(exact.weights)
    ids = RANDOM.integers(0, 40, size=(2, 30))
    exact_logits, fast_logits = exact(ids).numpy(), fast(ids).numpy()
    assert fast_logits.dtype == np.float32
    assert np.abs(fast_logits - exact_logits).max() < 0.02 * np.abs(exact_logits).max()
    assert not np.array_equal(fast_logits, exact_logits)  # the products really ran in bfloat16


def test_a_bfloat16_run_saves_a_bundle_that_loads_in_float32(tmp_path, token_sequences):
    vocabulary = Vocabulary()
    model_config = ModelConfig(vocabulary_size=len(vocabulary), **TINY_MODEL)
    config = TrainConfig(epochs=2, sequence_length=16, batch_size=8, precision="bfloat16")
    train_sequences(token_sequences, tmp_path, BundleInfo(model_config, vocabulary, "0" * 64, ["x.mid"], config))
    loaded = load_bundle(tmp_path)
    first, second = (entry["loss"] for entry in loaded.history)
    assert loaded.info.train_config.precision == "bfloat16" and second < first
    assert loaded.model.get_layer("lstm_0").compute_dtype == "float32"


def test_precision_is_checked_and_auto_follows_the_cpu():
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="half")
    assert compute_dtype("auto") == ("bfloat16" if cpu_has_bfloat16() else "float32")
    assert compute_dtype("float32") == "float32"


def test_settings_of_earlier_bundles_still_read():
    assert TrainConfig.from_dict({"epochs": 3, "jit_compile": True}) == TrainConfig(epochs=3)


def test_chunked_logits_equal_one_pass_over_each_piece_whatever_the_lengths():
    model = build_model(ModelConfig(vocabulary_size=30, embedding_size=8, layers=2, units=16))
    pieces = [RANDOM.integers(0, 30, size=length).astype(np.int32) for length in (1, 5, 23, 40, 7, 61)]
    got = {index: [] for index in range(len(pieces))}
    for index, start, logits in chunked_logits(model, pieces, chunk_length=8, batch_tokens=24):
        assert start == sum(len(chunk) for chunk in got[index])  # chunks of a piece come in order
        got[index].append(logits)
    for index, piece in enumerate(pieces):
        whole = model.predict_on_batch(piece[None, :])[0]
        np.testing.assert_allclose(np.concatenate(got[index]), whole, rtol=1e-4, atol=1e-5)
