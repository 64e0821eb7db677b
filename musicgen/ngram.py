"""An n-gram language model on token ids: the baseline a trained network should beat.

Interpolated Kneser-Ney smoothing (Chen & Goodman 1998, with one discount per n-gram
length): the longest context's counts are discounted and the freed probability goes to the
next shorter context, whose counts say in how many different contexts an id follows (not how
often), down to a uniform distribution over the whole vocabulary. So every id gets a
probability above 0 and each distribution sums to 1.

Each id after the first of a sequence is predicted from up to `order - 1` ids before it;
near the start of a sequence the context is shorter (it is never padded).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

Context = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class _Table:
    """Counts of the n-grams of one length, grouped by their context (all ids but the last)."""

    followers: dict[Context, tuple[np.ndarray, np.ndarray]]  # context -> (next ids, their counts)
    discount: float  # subtracted from every count, 0 < discount < 1


@dataclass(frozen=True, eq=False)
class NgramModel:
    """A fitted n-gram model; make one with `fit_ngram`."""

    order: int  # n: ids are predicted from up to n - 1 ids before them
    vocabulary_size: int  # V: ids are 0..V-1
    counts: tuple[_Table, ...]  # counts[k]: how often each (k+1)-gram occurs
    continuation_counts: tuple[_Table, ...]  # [k]: distinct ids seen before each (k+1)-gram, k < n-1


@dataclass(frozen=True)
class OrderScore:
    """How well one order predicts the validation sequences."""

    order: int
    nll_per_token: float  # natural log, mean over the predicted tokens
    accuracy: float  # share of tokens that are the model's most likely next id, 0..1

    @property
    def perplexity(self) -> float:
        """exp(nll_per_token): as unsure as a fair choice among this many ids."""
        return float(np.exp(self.nll_per_token))


def fit_ngram(sequences: Iterable[np.ndarray], order: int, vocabulary_size: int) -> NgramModel:
    """Count the n-grams of the sequences, for every length 1..order."""
    order, vocabulary_size = _positive_int("order", order), _positive_int("vocabulary_size", vocabulary_size)
    lists = _checked_lists(sequences, vocabulary_size)
    grams = [_count_ngrams(lists, length) for length in range(1, order + 1)]
    counts = tuple(_table(counter) for counter in grams)
    continuation = tuple(_table(Counter(gram[1:] for gram in longer)) for longer in grams[1:])
    return NgramModel(order, vocabulary_size, counts, continuation)


def probabilities(model: NgramModel, context: Iterable[int]) -> np.ndarray:
    """P(next id | the last order-1 ids of `context`) for every id, shape (V,), summing to 1."""
    context = tuple(int(token) for token in context)
    return _distribution(model, context[max(len(context) - model.order + 1, 0) :], {}, top=True)


def nll_per_token(model: NgramModel, sequences: Iterable[np.ndarray]) -> float:
    """Mean negative log-likelihood (natural log) of every id after the first of each sequence."""
    return _score(model, sequences).nll_per_token


def accuracy(model: NgramModel, sequences: Iterable[np.ndarray]) -> float:
    """Share of the ids after the first of each sequence that are the model's most likely guess."""
    return _score(model, sequences).accuracy


def best_ngram(
    train: Iterable[np.ndarray],
    valid: Iterable[np.ndarray],
    vocabulary_size: int,
    orders: Iterable[int] = range(1, 6),
) -> tuple[NgramModel, list[OrderScore]]:
    """The order with the lowest validation NLL, fitted on `train`, and the scores of all orders."""
    train, valid = list(train), list(valid)
    best, best_nll, table = None, np.inf, []
    for order in orders:
        model = fit_ngram(train, order, vocabulary_size)
        table.append(_score(model, valid))
        if table[-1].nll_per_token < best_nll:
            best, best_nll = model, table[-1].nll_per_token
    if best is None:
        raise ValueError("orders must name at least one order")
    return best, table


def _score(model: NgramModel, sequences: Iterable[np.ndarray]) -> OrderScore:
    """NLL and accuracy in one pass over the distinct contexts."""
    total, correct, count = 0.0, 0, 0
    for distribution, targets in _predictions(model, sequences):
        total -= float(np.log(distribution[targets]).sum())
        correct += int((targets == distribution.argmax()).sum())
        count += len(targets)
    return OrderScore(model.order, total / count, correct / count)


def _predictions(model: NgramModel, sequences: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each distinct context in the sequences: P(next id | it), and the ids that followed it."""
    targets: defaultdict[Context, list[int]] = defaultdict(list)
    for ids in _checked_lists(sequences, model.vocabulary_size):
        for position in range(1, len(ids)):
            targets[tuple(ids[max(position - model.order + 1, 0) : position])].append(ids[position])
    if not targets:
        raise ValueError("there is nothing to predict: every sequence has fewer than 2 ids")
    cache: dict[Context, np.ndarray] = {}
    for context, following in targets.items():
        yield _distribution(model, context, cache, top=True), np.array(following)


def _distribution(model: NgramModel, context: Context, cache: dict[Context, np.ndarray], top: bool) -> np.ndarray:
    """P(next id | context): counts for the longest context, continuation counts below it.

    Shorter contexts are shared by many longer ones, so their distributions are cached.
    """
    if not top and context in cache:
        return cache[context]
    if context:
        lower = _distribution(model, context[1:], cache, top=False)
    else:
        lower = np.full(model.vocabulary_size, 1 / model.vocabulary_size)
    table = (model.counts if top else model.continuation_counts)[len(context)]
    distribution = _interpolate(table, context, lower)
    if not top:
        cache[context] = distribution
    return distribution


def _interpolate(table: _Table, context: Context, lower: np.ndarray) -> np.ndarray:
    """Discounted counts after `context`, plus the freed probability spread as `lower`."""
    if context not in table.followers:
        return lower  # never seen: all the probability comes from the shorter context
    ids, counts = table.followers[context]
    total = counts.sum()
    distribution = lower * (table.discount * len(ids) / total)
    distribution[ids] += (counts - table.discount) / total
    return distribution


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be 1 or more, got {value!r}")
    return int(value)


def _checked_lists(sequences: Iterable[np.ndarray], vocabulary_size: int) -> list[list[int]]:
    lists = []
    for number, sequence in enumerate(sequences):
        ids = np.asarray(sequence).ravel()
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"sequence {number} must hold integer ids, got {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocabulary_size):
            raise ValueError(f"sequence {number} has ids outside 0..{vocabulary_size - 1}")
        lists.append(ids.tolist())
    return lists


def _count_ngrams(lists: list[list[int]], length: int) -> Counter[Context]:
    counter: Counter[Context] = Counter()
    for ids in lists:
        counter.update(zip(*(ids[shift:] for shift in range(length)), strict=False))
    return counter


def _table(counter: Counter[Context]) -> _Table:
    grouped: defaultdict[Context, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for gram, count in counter.items():
        ids, counts = grouped[gram[:-1]]
        ids.append(gram[-1])
        counts.append(count)
    followers = {context: (np.array(ids), np.array(counts, float)) for context, (ids, counts) in grouped.items()}
    return _Table(followers, _discount(counter.values()))


def _discount(counts: Iterable[int]) -> float:
    """Ney's estimate n1 / (n1 + 2 n2) from how many n-grams occur once and twice, kept in 0.05..0.95."""
    occurrences = Counter(counts)
    once, twice = occurrences[1], occurrences[2]
    estimate = once / (once + 2 * twice) if once + twice else 0.5
    return min(max(estimate, 0.05), 0.95)
