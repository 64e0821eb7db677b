"""The JSB Chorales benchmark: serialization, the evaluation rule, and a tiny model trained for real."""

import json
import math
from dataclasses import replace
from functools import cache
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from benchmarks.jsb import (
    KEYS,
    SMOKE,
    FigureLog,
    FrameVocabulary,
    JsbError,
    arrange_for_validation,
    bernoulli_logits,
    data_set_name,
    default_path,
    frame_log_probabilities,
    key_probabilities,
    load_splits,
    lstm_logits,
    model_nll,
    result_table,
    run_benchmark,
    split_nll,
    transpose_frames,
    transposed_pieces,
)
from musicgen.dataset import split_by_file
from musicgen.model import ModelConfig, build_model

VOCABULARY = FrameVocabulary()


def random_pieces(seed: int, count: int, keys: int = KEYS) -> list[np.ndarray]:
    """Pieces of 1..40 frames with 0..4 keys each, empty frames included."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        frames = np.zeros((rng.integers(1, 41), keys), bool)
        for frame in frames:
            frame[rng.choice(np.arange(keys // 3, 2 * keys // 3), rng.integers(0, 5), replace=False)] = True
        pieces.append(frames)
    return pieces


def write_mat(path: Path, splits: dict[str, list[np.ndarray]]) -> Path:
    """A .mat file in the JSB layout: each split a (1, N) cell array of (T, 88) uint8 piano rolls."""
    cells = {}
    for name, pieces in splits.items():
        cells[name] = np.empty((1, len(pieces)), dtype=object)
        for column, piece in enumerate(pieces):
            cells[name][0, column] = piece.astype(np.uint8)
    scipy.io.savemat(path, cells)
    return path


def jsb_file(tmp_path: Path) -> Path:
    """The real JSB file when there is one, else a small synthetic file of the same layout."""
    if default_path() is not None:
        return default_path()
    splits = {"traindata": random_pieces(1, 24), "validdata": random_pieces(2, 8), "testdata": random_pieces(3, 8)}
    return write_mat(tmp_path / "synthetic.mat", splits)


# --- serialization ------------------------------------------------------------------------


def test_frames_become_ascending_keys_and_end_of_frame_tokens():
    vocabulary = FrameVocabulary(keys=3)
    frames = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]], bool)
    assert vocabulary.frames_to_tokens(frames).tolist() == [4, 0, 2, 3, 3, 1, 3, 5]


@pytest.mark.parametrize("seed", range(5))
def test_frames_to_tokens_to_frames_round_trip(seed):
    for piece in random_pieces(seed, 20):
        assert np.array_equal(VOCABULARY.tokens_to_frames(VOCABULARY.frames_to_tokens(piece)), piece)


def test_transposition_moves_every_note_or_drops_the_shift():
    piece = np.zeros((2, KEYS), bool)
    piece[0, [0, 40]] = piece[1, [KEYS - 3, 10]] = True
    assert transpose_frames(piece, -1) is None and transpose_frames(piece, 3) is None
    moved = transpose_frames(piece, 2)
    assert [np.flatnonzero(frame).tolist() for frame in moved] == [[2, 42], [12, KEYS - 1]]
    assert len(transposed_pieces([piece])) == 3  # shifts 0, 1 and 2 keep it on the keyboard


# --- evaluation rule -----------------------------------------------------------------------


def test_a_model_saying_one_half_for_every_key_scores_88_ln_2_per_frame():
    uniform = bernoulli_logits(VOCABULARY, np.full(KEYS, 0.5))
    assert model_nll(VOCABULARY, uniform, random_pieces(0, 30)) == pytest.approx(88 * math.log(2), rel=1e-12)


def test_token_path_matches_independent_keys_and_divides_by_predicted_frames():
    pieces = random_pieces(4, 10) + [np.zeros((1, KEYS), bool)]  # a one-frame piece adds nothing
    p = key_probabilities(random_pieces(5, 30))
    per_key = [np.where(piece, np.log(p), np.log1p(-p)).sum(axis=1) for piece in pieces]
    expected = -sum(frames[1:].sum() for frames in per_key) / sum(len(piece) - 1 for piece in pieces)
    nll = model_nll(VOCABULARY, bernoulli_logits(VOCABULARY, p), pieces)
    assert math.isfinite(nll) and nll == pytest.approx(expected, rel=1e-9)


def test_split_nll_sums_frames_two_to_t_over_the_split_and_divides_by_their_count():
    pieces = [np.array([-100.0]), np.array([-100.0, -2.0]), np.array([-100.0, -1.0, -1.0, -1.0, -10.0])]
    assert split_nll(pieces) == pytest.approx((2 + 13) / (0 + 1 + 4))
    with pytest.raises(JsbError, match="no frames to predict"):
        split_nll([np.array([-1.0])])


def prefix_random_logits(tokens: np.ndarray) -> np.ndarray:
    """A random model: the logits after each position depend only on the tokens up to it."""
    rows = [np.random.default_rng(list(map(int, tokens[: i + 1]))).normal(0, 3, 6) for i in range(len(tokens))]
    return np.array(rows)


@cache
def untrained_lstm():
    return build_model(ModelConfig(vocabulary_size=6, embedding_size=4, layers=1, units=8))


def untrained_lstm_for(vocabulary: FrameVocabulary):
    return build_model(ModelConfig(vocabulary_size=len(vocabulary), embedding_size=4, layers=1, units=8))


def untrained_lstm_logits(tokens: np.ndarray) -> np.ndarray:
    return np.asarray(untrained_lstm().predict_on_batch(tokens[None, :]), np.float64)[0]


@pytest.mark.parametrize("logits_of", [prefix_random_logits, untrained_lstm_logits])
def test_renormalised_frame_probabilities_sum_to_one_over_all_frames(logits_of):
    vocabulary = FrameVocabulary(keys=3)
    history = np.array([[1, 0, 1], [0, 1, 0]], bool)
    total = 0.0
    for frame in product([False, True], repeat=3):
        tokens = vocabulary.frames_to_tokens(np.vstack([history, [frame]]))
        total += math.exp(frame_log_probabilities(vocabulary, tokens, logits_of(tokens))[-1])
    assert total == pytest.approx(1.0, abs=1e-9)


# --- data and training ---------------------------------------------------------------------


def test_the_project_split_holds_out_exactly_the_valid_pieces():
    train = [np.full(3, i, np.int32) for i in range(40)]
    validation = [np.full(3, 100 + i, np.int32) for i in range(7)]
    ordered, share = arrange_for_validation(train, validation, seed=3)
    train_part, validation_part = split_by_file(ordered, share, 3)
    assert [p.tolist() for p in train_part] == [p.tolist() for p in train]
    assert [p.tolist() for p in validation_part] == [p.tolist() for p in validation]


def test_a_mat_file_written_by_scipy_loads_as_bool_piano_rolls(tmp_path):
    pieces = random_pieces(6, 3)
    splits = load_splits(write_mat(tmp_path / "x.mat", dict.fromkeys(("traindata", "validdata", "testdata"), pieces)))
    assert all(np.array_equal(a, b) and a.dtype == bool for a, b in zip(splits["testdata"], pieces, strict=True))


def test_a_file_without_a_split_or_with_the_wrong_width_is_a_plain_error(tmp_path):
    with pytest.raises(JsbError, match="no testdata"):
        load_splits(write_mat(tmp_path / "a.mat", {"traindata": random_pieces(0, 2), "validdata": random_pieces(0, 2)}))
    narrow = random_pieces(0, 2, keys=12)
    with pytest.raises(JsbError, match="piece 1 of traindata is not a"):
        load_splits(write_mat(tmp_path / "b.mat", dict.fromkeys(("traindata", "validdata", "testdata"), narrow)))
    (tmp_path / "c.mat").write_text("not matlab")
    with pytest.raises(JsbError, match="cannot read c.mat"):
        load_splits(tmp_path / "c.mat")


def test_smoke_run_trains_a_tiny_lstm_and_scores_the_test_split(tmp_path):
    result = run_benchmark(jsb_file(tmp_path), SMOKE, tmp_path / "runs")
    assert math.isfinite(result.test_nll) and result.test_nll < 88 * math.log(2)
    assert result.uniform_test_nll == pytest.approx(88 * math.log(2))
    assert math.isfinite(result.bernoulli_test_nll) and result.epochs == 1 and result.best_step == result.steps > 0
    assert (result.run_dir / "best_frame_nll.weights.h5").is_file()
    assert f"| {result.test_nll:.2f} | {result.validation_nll:.2f} |" in result_table(result, SMOKE)
    figures = [json.loads(line) for line in (result.run_dir / "figures.jsonl").read_text().splitlines()]
    assert [figure["kind"] for figure in figures] == ["baselines", "validation", "test"]  # written as measured
    assert figures[-1]["test_nll"] == result.test_nll


def test_a_time_budget_stops_mid_epoch_and_the_last_steps_are_scored(tmp_path):
    path = write_mat(tmp_path / "Nottingham.mat", {"traindata": random_pieces(1, 40), "validdata": random_pieces(2, 4),
                                                   "testdata": random_pieces(3, 4)})  # fmt: skip
    setup = replace(SMOKE, minutes=0.0)  # the budget is spent after the first step
    result = run_benchmark(path, setup, tmp_path / "runs")
    assert result.steps == result.best_step == 1 and result.data_set == "Nottingham"
    table = result_table(result, setup)
    assert "| TCN | 3.07 |" in table and "| TCN | 8.10 |" not in table


def test_data_sets_are_named_from_their_file_names():
    assert data_set_name("x/JSB_Chorales.mat") == "JSB Chorales"
    assert data_set_name("Piano-midi.de.mat") == "Piano-midi.de"
    assert data_set_name("my_rolls.mat") == "my_rolls"


def test_lstm_scoring_is_the_one_pass_figure_in_bounded_chunks(tmp_path):
    pieces = random_pieces(7, 5)
    model = untrained_lstm_for(FrameVocabulary())

    def one_pass(tokens):
        for index, piece in enumerate(tokens):
            yield index, 0, np.asarray(model.predict_on_batch(piece[None, :]), np.float64)[0]

    assert model_nll(VOCABULARY, lstm_logits(model), pieces) == pytest.approx(model_nll(VOCABULARY, one_pass, pieces))


def test_figures_are_appended_one_json_line_each(tmp_path):
    figures = FigureLog(tmp_path / "run" / "figures.jsonl")
    figures.write(kind="a", value=1.5)
    figures.write(kind="b", value=None)
    lines = (tmp_path / "run" / "figures.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"kind": "a", "value": 1.5}, {"kind": "b", "value": None}]
