"""musicgen.ngram: proper distributions over the whole vocabulary, and the known extremes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from musicgen.ngram import accuracy, best_ngram, fit_ngram, nll_per_token, probabilities

VOCABULARY_SIZE = 12


@pytest.fixture(scope="module")
def random_sequences() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    # ids 0..9 only, so ids 10 and 11 are never seen in training
    return [rng.integers(0, 10, rng.integers(1, 60)) for _ in range(40)]


def cycle(length: int, period: int = 10, first: int = 0) -> np.ndarray:
    """first, first+1, ... period-1, 0, 1, ...: every id decides the next one."""
    return (np.arange(length) + first) % period


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("context", [[], [3], [3, 4], [9, 9, 9], [10, 11], [1, 2, 3, 4, 5, 6]])
def test_probabilities_sum_to_one_over_the_vocabulary(random_sequences, order, context):
    model = fit_ngram(random_sequences, order, VOCABULARY_SIZE)
    distribution = probabilities(model, context)
    assert distribution.shape == (VOCABULARY_SIZE,)
    assert distribution.sum() == pytest.approx(1.0, abs=1e-12)
    assert (distribution > 0).all()  # unseen ids 10 and 11 too


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 5), max_size=20), max_size=6),
    st.integers(1, 5),
    st.lists(st.integers(0, 6), max_size=6),
)
def test_any_model_gives_a_proper_distribution(sequences, order, context):
    model = fit_ngram([np.array(ids, np.int64) for ids in sequences], order, 7)
    distribution = probabilities(model, context)
    assert distribution.sum() == pytest.approx(1.0, abs=1e-12)
    assert (distribution > 0).all()


@pytest.mark.parametrize("order", [2, 3, 5])
def test_a_deterministic_sequence_is_almost_certain_from_order_2(order):
    model = fit_ngram([cycle(300), cycle(200, first=4)], order, VOCABULARY_SIZE)
    unseen = [cycle(50, first=7)]
    assert nll_per_token(model, unseen) < 0.02
    assert accuracy(model, unseen) == 1.0


def test_a_unigram_on_a_cycle_knows_nothing():
    model = fit_ngram([cycle(1000)], 1, 10)
    assert nll_per_token(model, [cycle(100)]) == pytest.approx(math.log(10))


def test_a_uniform_unigram_gives_log_v():
    model = fit_ngram([np.arange(VOCABULARY_SIZE).repeat(5)], 1, VOCABULARY_SIZE)
    assert probabilities(model, [0, 1]) == pytest.approx(np.full(VOCABULARY_SIZE, 1 / VOCABULARY_SIZE))
    ids = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    assert nll_per_token(model, [ids]) == pytest.approx(math.log(VOCABULARY_SIZE))


def test_an_empty_model_is_uniform():
    model = fit_ngram([], 3, VOCABULARY_SIZE)
    assert nll_per_token(model, [cycle(30)]) == pytest.approx(math.log(VOCABULARY_SIZE))


def test_contexts_are_cut_at_the_start_of_each_sequence(random_sequences):
    model = fit_ngram(random_sequences, 4, VOCABULARY_SIZE)
    ids = np.array([5, 2, 7, 1, 8])
    expected = -np.mean([np.log(probabilities(model, ids[:i])[ids[i]]) for i in range(1, len(ids))])
    assert nll_per_token(model, [ids, ids[:1], ids[:0]]) == pytest.approx(expected)  # short ones add nothing
    assert probabilities(model, [0, 0, *ids[:3]]) == pytest.approx(probabilities(model, ids[:3]))


def test_more_context_helps_on_structured_data_and_the_best_order_is_picked():
    rng = np.random.default_rng(0)
    phrases = [cycle(10), cycle(10, first=5)[::-1].copy(), np.array([1, 1, 2, 2, 3, 3, 4, 4, 5, 5])]
    train = [np.concatenate([phrases[k] for k in rng.integers(0, 3, 30)]) for _ in range(20)]
    valid = [np.concatenate([phrases[k] for k in rng.integers(0, 3, 30)]) for _ in range(5)]
    best, table = best_ngram(train, valid, VOCABULARY_SIZE, orders=range(1, 5))
    assert [row.order for row in table] == [1, 2, 3, 4]
    assert table[0].nll_per_token > table[1].nll_per_token > table[2].nll_per_token
    assert best.order == min(table, key=lambda row: row.nll_per_token).order
    assert table[0].perplexity == pytest.approx(math.exp(table[0].nll_per_token))
    assert all(0 <= row.accuracy <= 1 for row in table)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: fit_ngram([np.array([1, 12])], 2, 12), "sequence 0 has ids outside 0..11"),
        (lambda: fit_ngram([np.array([0]), np.array([-1])], 2, 12), "sequence 1 has ids outside 0..11"),
        (lambda: fit_ngram([np.array([0.5])], 2, 12), "sequence 0 must hold integer ids"),
        (lambda: fit_ngram([], 0, 12), "order must be 1 or more, got 0"),
        (lambda: fit_ngram([], 2, 0), "vocabulary_size must be 1 or more, got 0"),
        (lambda: nll_per_token(fit_ngram([], 2, 12), [np.array([4])]), "nothing to predict"),
        (lambda: best_ngram([], [cycle(5)], 12, orders=[]), "orders must name at least one order"),
    ],
)
def test_bad_input_is_refused_plainly(call, message):
    with pytest.raises(ValueError, match=message):
        call()
