"""Polyphonic piano-roll benchmarks: train musicgen's LSTM on frames and report test NLL in nats per frame.

    python -m benchmarks.jsb [PATH.mat] [--minutes 30] [--checkpoint-steps 250] [--smoke]

PATH is any piano-roll .mat file of Boulanger-Lewandowski et al. (2012)'s format (keys traindata, validdata,
testdata; each piece a (frames, 88) array of 0 and 1): JSB Chorales, Nottingham, MuseData, Piano-midi.de.
It defaults to $MUSICGEN_JSB_MAT, else JSB_Chorales.mat in $MUSICGEN_POLYPHONIC_DATA, else in the folder
shared/data/polyphonic beside this repository. The published rows of the data set (by file name) are printed
beside this run's.

A piece becomes tokens: `start`, then for every frame its sounding keys in ascending
order followed by `end_of_frame` (an empty frame is `end_of_frame` alone), then `end`.
The probability of a frame is the product of the probabilities of its tokens; at every
token the model's distribution is renormalised over the tokens legal there (a key above
the last key of the frame, or `end_of_frame`), so it is a proper distribution over frames.

Benchmark rule (Boulanger-Lewandowski et al. 2012): for every piece, predict frames
2..T from the frames before them (the LSTM reads the whole piece from `start`, chunk by
chunk carrying its state, so memory does not grow with piece length); sum
-log P(frame_t | frames < t) over all predicted frames of the split and divide by the
number of predicted frames (sum of T - 1).

Training uses musicgen's own `train_sequences` on every training piece in each of the
12 transpositions -5..+6 semitones; a transposition that would push a note off the 88
keys is dropped for that piece (never clamped, which would merge or reorder notes).
Every `checkpoint_steps` optimizer steps (and at each epoch's end) the weights are scored
on the valid split by the benchmark rule; the best are scored once on the test split.
Training stops when the time budget is spent, at any step. Every figure is appended to
figures.jsonl in the run folder as soon as it is measured, and the final table is written
to result.md there before it is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from scipy.special import logsumexp

from musicgen import bundle
from musicgen.dataset import split_by_file
from musicgen.model import ModelConfig, build_model, chunked_logits
from musicgen.train import CHECKPOINT_FOLDER, CHECKPOINT_WEIGHTS, CheckpointReport, TrainConfig, train_sequences

log = logging.getLogger(__name__)

KEYS = 88  # piano keys; column k of a frame is MIDI pitch k + 21
LOWEST_PITCH = 21  # MIDI pitch of column 0
SHIFTS = tuple(range(-5, 7))  # transpositions in semitones: each of the 12 keys once
SPLITS = ("traindata", "validdata", "testdata")
BEST_WEIGHTS = "best_frame_nll.weights.h5"  # in the run folder: the checkpoint with the best valid NLL
KEY_PROBABILITY_FLOOR = 1e-6  # Bernoulli baseline: a key never seen in training costs ~14 nats, not infinity

DATA_VARIABLE = "MUSICGEN_POLYPHONIC_DATA"  # a folder holding the .mat files
DEFAULT_FILE = "JSB_Chorales.mat"
FIGURES_FILE = "figures.jsonl"  # in the run folder: one JSON line per figure, written as it is measured
RESULT_FILE = "result.md"  # in the run folder: the final table

# Published test NLL in nats per frame: (model, figure, source), by data set. All but the NADE rows predict the
# keys of a frame independently. Bai et al. 2018 is "An Empirical Evaluation of Generic Convolutional and
# Recurrent Networks for Sequence Modeling" (arXiv:1803.01271), Table 1 ("polyphonic music, loss"); the figures
# are copied from that table as this file's earlier version had them, not re-checked against the paper here.
PUBLISHED = {
    "JSB Chorales": (
        ("RNN", 8.91, "Bai et al. 2018, Table 1"),
        ("LSTM", 8.45, "Bai et al. 2018, Table 1"),
        ("GRU", 8.43, "Bai et al. 2018, Table 1"),
        ("TCN", 8.10, "Bai et al. 2018, Table 1"),
        ("RNN-NADE", 5.19, "Boulanger-Lewandowski et al. 2012 (about)"),
        ("DMM-Aug-NADE (variational bound)", 5.12, "Krishnan et al. 2017"),
    ),
    "Nottingham": (
        ("RNN", 4.05, "Bai et al. 2018, Table 1"),
        ("LSTM", 3.29, "Bai et al. 2018, Table 1"),
        ("GRU", 3.46, "Bai et al. 2018, Table 1"),
        ("TCN", 3.07, "Bai et al. 2018, Table 1"),
    ),
}
DATA_SET_NAMES = {"jsbchorales": "JSB Chorales", "jsb": "JSB Chorales", "nottingham": "Nottingham",
                  "musedata": "MuseData", "pianomidi": "Piano-midi.de", "pianomidide": "Piano-midi.de"}  # fmt: skip


def data_set_name(path: Path | str) -> str:
    """The data set a .mat file holds, from its file name (JSB_Chorales.mat -> "JSB Chorales"), else its stem."""
    stem = Path(path).stem
    return DATA_SET_NAMES.get("".join(c for c in stem.lower() if c.isalnum()), stem)


def default_path() -> Path | None:
    """$MUSICGEN_JSB_MAT, else JSB_Chorales.mat in $MUSICGEN_POLYPHONIC_DATA or in shared/data/polyphonic beside
    the repository; None when none of them is a file."""
    folders = [os.environ.get(DATA_VARIABLE), Path(__file__).resolve().parents[2] / "shared/data/polyphonic"]
    candidates = [os.environ.get("MUSICGEN_JSB_MAT"), *(Path(f) / DEFAULT_FILE for f in folders if f)]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


@dataclass(frozen=True)
class Setup:
    """Model, training settings and time budget of one benchmark run."""

    model: ModelConfig
    train: TrainConfig  # validation_share is replaced so that the valid split is held out
    minutes: float = 30.0  # training time budget, validation scoring included


FULL = Setup(
    ModelConfig(vocabulary_size=KEYS + 3, embedding_size=64, layers=2, units=256, dropout=0.3),
    TrainConfig(epochs=1000, sequence_length=128, batch_size=64, learning_rate=2e-3, checkpoint_steps=250),
)
SMOKE = Setup(  # a few hundred steps of a tiny model: one epoch over the transposed training pieces
    ModelConfig(vocabulary_size=KEYS + 3, embedding_size=16, layers=1, units=32, dropout=0.0),
    TrainConfig(epochs=1, sequence_length=64, batch_size=64, learning_rate=1e-2),
)


class JsbError(Exception):
    """A file that is not a JSB-format piano-roll .mat file, with a plain reason."""


@dataclass(frozen=True)
class FrameVocabulary:
    """Token ids of the frame serialization: one id per key, then end_of_frame, start and end.

    Also what musicgen's bundle writer needs of a vocabulary (`len` and `to_dict`).
    """

    keys: int = KEYS  # width of a frame; token k is key k

    @property
    def end_of_frame(self) -> int:
        """The token that closes every frame."""
        return self.keys

    @property
    def start(self) -> int:
        """The first token of a piece."""
        return self.keys + 1

    @property
    def end(self) -> int:
        """The last token of a piece."""
        return self.keys + 2

    def __len__(self) -> int:
        return self.keys + 3

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return {"kind": "piano-roll frames", "keys": self.keys, "lowest_pitch": LOWEST_PITCH}

    def frames_to_tokens(self, frames: np.ndarray) -> np.ndarray:
        """Start, each frame's keys in ascending order then end_of_frame, then end."""
        body = [np.append(np.flatnonzero(frame), self.end_of_frame) for frame in frames]
        return np.concatenate([[self.start], *body, [self.end]]).astype(np.int32)

    def tokens_to_frames(self, tokens: np.ndarray) -> np.ndarray:
        """The (frames, keys) bool piano roll that `frames_to_tokens` made these tokens from."""
        tokens = np.asarray(tokens)
        is_key, is_end_of_frame = tokens < self.keys, tokens == self.end_of_frame
        frames = np.zeros((int(is_end_of_frame.sum()), self.keys), bool)
        frame_of_token = np.cumsum(is_end_of_frame)  # a key belongs to the frame after the ends before it
        frames[frame_of_token[is_key], tokens[is_key]] = True
        return frames

    def legal_next(self, tokens: np.ndarray) -> np.ndarray:
        """(len(tokens), vocabulary) bool: which tokens may follow each position within a frame."""
        last_key = np.where(np.asarray(tokens) < self.keys, tokens, -1)[:, None]  # -1 at a frame start
        ids = np.arange(len(self))[None, :]
        return ((ids > last_key) & (ids < self.keys)) | (ids == self.end_of_frame)


# --- data -------------------------------------------------------------------------------


def load_splits(path: Path | str) -> dict[str, list[np.ndarray]]:
    """The train, valid and test pieces of a JSB-format .mat file as (T, 88) bool piano rolls."""
    try:
        data = scipy.io.loadmat(path)
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as error:
        raise JsbError(f"cannot read {Path(path).name} as a MATLAB .mat file ({error})") from None
    return {name: _pieces(data, name) for name in SPLITS}


def _pieces(data: dict, name: str) -> list[np.ndarray]:
    if name not in data:
        raise JsbError(f"the file has no {name}; it should have {', '.join(SPLITS)}")
    pieces = [np.asarray(piece) for piece in np.asarray(data[name], dtype=object).ravel()]
    for number, piece in enumerate(pieces, 1):
        if piece.ndim != 2 or piece.shape[1] != KEYS or len(piece) == 0 or not np.isin(piece, (0, 1)).all():
            raise JsbError(f"piece {number} of {name} is not a (frames, {KEYS}) piano roll of 0 and 1")
    if not pieces:
        raise JsbError(f"{name} holds no pieces")
    return [piece.astype(bool) for piece in pieces]


def transpose_frames(frames: np.ndarray, shift: int) -> np.ndarray | None:
    """The piece moved by `shift` keys, or None when a note would leave the keyboard."""
    used = np.flatnonzero(frames.any(axis=0))
    if used.size and (used[0] + shift < 0 or used[-1] + shift >= frames.shape[1]):
        return None
    return np.roll(frames, shift, axis=1)  # nothing wraps around: checked above


def transposed_pieces(pieces: Sequence[np.ndarray], shifts: Sequence[int] = SHIFTS) -> list[np.ndarray]:
    """Every piece in every shift that keeps all of its notes on the keyboard."""
    moved = (transpose_frames(piece, shift) for piece in pieces for shift in shifts)
    return [piece for piece in moved if piece is not None]


def arrange_for_validation(
    train: list[np.ndarray], validation: list[np.ndarray], seed: int
) -> tuple[list[np.ndarray], float]:
    """Order the pieces and pick the share so that musicgen's `split_by_file` holds out exactly `validation`.

    `train_sequences` splits its input with split_by_file(sequences, share, seed); asking that
    function which slots it holds out for a list of this length, and putting the valid split
    there, makes the project's own validation loss and best-weights file use the valid split.
    """
    count = len(train) + len(validation)
    share = len(validation) / count
    train_slots, validation_slots = split_by_file([np.array([slot]) for slot in range(count)], share, seed)
    if len(validation_slots) != len(validation):
        raise JsbError(f"cannot hold out {len(validation)} of {count} pieces for validation")
    ordered: list[np.ndarray] = [np.zeros(0, np.int32)] * count
    for slots, pieces in ((train_slots, train), (validation_slots, validation)):
        for slot, piece in zip(slots, pieces, strict=True):
            ordered[int(slot[0])] = piece
    return ordered, share


# --- evaluation -------------------------------------------------------------------------


def frame_log_probabilities(vocabulary: FrameVocabulary, tokens: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """log P(frame_t | frames < t) for every frame of one piece.

    tokens: (L,) ids from `frames_to_tokens`; logits: (L, vocabulary), row i scores the token after tokens[i].
    """
    return frames_from_token_scores(vocabulary, tokens, target_log_probabilities(vocabulary, tokens, 0, logits))


def target_log_probabilities(vocabulary: FrameVocabulary, tokens: np.ndarray, start: int, logits) -> np.ndarray:
    """log P of tokens[start + 1 .. start + n] under rows 0..n-1 of `logits`, renormalised over the legal tokens."""
    logits = np.asarray(logits, np.float64)[: len(tokens) - 1 - start]
    masked = np.where(vocabulary.legal_next(tokens[start : start + len(logits)]), logits, -np.inf)
    log_probabilities = masked - logsumexp(masked, axis=1, keepdims=True)
    return log_probabilities[np.arange(len(logits)), tokens[start + 1 : start + 1 + len(logits)]]


def frames_from_token_scores(vocabulary: FrameVocabulary, tokens: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Sum the log P of tokens[1:] (`scores`) into one log P per frame (the final `end` belongs to none)."""
    targets = tokens[1:]
    ends_frame = targets == vocabulary.end_of_frame
    in_frame = (targets < vocabulary.keys) | ends_frame
    frame_of_target = np.cumsum(ends_frame) - ends_frame
    return np.bincount(frame_of_target[in_frame], scores[in_frame], minlength=int(ends_frame.sum()))


def split_nll(frame_log_probabilities_per_piece: Sequence[np.ndarray]) -> float:
    """Nats per predicted frame: -sum of log P over frames 2..T of every piece / sum of (T - 1)."""
    predicted = [log_probabilities[1:] for log_probabilities in frame_log_probabilities_per_piece]
    count = sum(len(frames) for frames in predicted)
    if count == 0:
        raise JsbError("the split has no frames to predict: every piece is one frame long")
    return -float(sum(frames.sum() for frames in predicted)) / count


# token arrays -> (piece index, first position, logits (positions, vocabulary)) for chunks that cover every piece;
# row i of a chunk scores the token after position start + i.
LogitsFunction = Callable[[list[np.ndarray]], Iterator[tuple[int, int, np.ndarray]]]


def model_nll(vocabulary: FrameVocabulary, logits_of: LogitsFunction, pieces: Sequence[np.ndarray]) -> float:
    """The benchmark figure of a model, given as a function from token arrays to chunks of their logits."""
    tokens = [vocabulary.frames_to_tokens(piece) for piece in pieces]
    scores = [np.zeros(len(piece) - 1) for piece in tokens]  # memory: one number per token, not per logit
    for index, start, logits in logits_of(tokens):
        chunk = target_log_probabilities(vocabulary, tokens[index], start, logits)
        scores[index][start : start + len(chunk)] = chunk
    return split_nll([frames_from_token_scores(vocabulary, t, s) for t, s in zip(tokens, scores, strict=True)])


def lstm_logits(model) -> LogitsFunction:
    """Logits of a musicgen LSTM, each piece read from its start, in chunks of bounded memory."""
    return lambda tokens: chunked_logits(model, tokens)


def bernoulli_logits(vocabulary: FrameVocabulary, key_probabilities: np.ndarray) -> LogitsFunction:
    """Next-token log-probabilities of independent keys read in ascending order.

    After key k (k = -1 at a frame start), key j > k comes next with p_j * prod(1 - p_i, k < i < j)
    and end_of_frame with prod(1 - p_i, i > k): a frame's tokens multiply to prod(p or 1 - p) over keys.
    """
    p = np.asarray(key_probabilities, np.float64)
    log_silent = np.concatenate([[0.0], np.cumsum(np.log1p(-p))])  # [m]: log prod(1 - p_i, i < m)

    def logits_of(tokens: list[np.ndarray]) -> Iterator[tuple[int, int, np.ndarray]]:
        for index, piece in enumerate(tokens):
            yield index, 0, _bernoulli_rows(vocabulary, piece, np.log(p), log_silent)

    return logits_of


def _bernoulli_rows(vocabulary, tokens, log_p, log_silent) -> np.ndarray:
    first_free = np.where(tokens < vocabulary.keys, tokens, -1) + 1  # lowest key that may still come
    rows = np.full((len(tokens), len(vocabulary)), -np.inf)
    rows[:, : vocabulary.keys] = log_p + log_silent[: vocabulary.keys] - log_silent[first_free][:, None]
    rows[:, vocabulary.end_of_frame] = log_silent[vocabulary.keys] - log_silent[first_free]
    return rows  # entries for keys at or below the last key are not probabilities; they are masked


def key_probabilities(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """How often each key sounds in the frames of these pieces, kept off 0 and 1."""
    frequencies = np.concatenate(list(pieces)).mean(axis=0)
    return np.clip(frequencies, KEY_PROBABILITY_FLOOR, 1 - KEY_PROBABILITY_FLOOR)


# --- training ---------------------------------------------------------------------------


class CheckpointSelector:
    """Scores each checkpoint on the valid split by the benchmark rule, keeps the best, watches the clock."""

    def __init__(self, setup: Setup, validation: list[np.ndarray], run_dir: Path, figures: FigureLog):
        self.vocabulary, self.validation, self.run_dir, self.figures = FrameVocabulary(), validation, run_dir, figures
        self.model = build_model(setup.model)
        self.started = time.monotonic()
        self.deadline = self.started + setup.minutes * 60
        self.best_nll, self.best_step, self.step, self.scored_at = math.inf, 0, 0, self.started
        self.steps_per_epoch = 0  # known from the first checkpoint on

    def on_checkpoint(self, report: CheckpointReport) -> None:
        """Score the weights the run has just saved."""
        self.steps_per_epoch = report.steps_per_epoch
        self.score(report.step, report.loss, report.validation_loss)

    @property
    def epochs(self) -> float:
        """Passes over the training windows done at the last scored step (0 before the first checkpoint)."""
        return self.step / self.steps_per_epoch if self.steps_per_epoch else 0.0

    def score(self, step: int, loss: float | None = None, validation_loss: float | None = None) -> None:
        """Load the run's last checkpoint, score it on the valid split, keep it if it is the best so far."""
        self.model.load_weights(self.run_dir / CHECKPOINT_FOLDER / CHECKPOINT_WEIGHTS)
        nll = model_nll(self.vocabulary, lstm_logits(self.model), self.validation)
        self.step, self.scored_at = step, time.monotonic()
        if nll < self.best_nll:
            self.best_nll, self.best_step = nll, step
            self.model.save_weights(self.run_dir / BEST_WEIGHTS)
        minutes = (self.scored_at - self.started) / 60
        best = " (best)" if self.best_step == step else ""
        self.figures.write(kind="validation", step=step, epochs=round(self.epochs, 3), minutes=round(minutes, 2),
                           valid_nll=nll, loss=loss, valid_loss=validation_loss)  # fmt: skip
        log.info("step %d (epoch %.2f): loss %s, valid NLL %.3f nats/frame%s, %.1f min in",
                 step, self.epochs, "-" if loss is None else f"{loss:.4f}", nll, best, minutes)  # fmt: skip

    def should_stop(self) -> bool:
        """True once the time budget is spent."""
        return time.monotonic() > self.deadline

    @property
    def minutes(self) -> float:
        """Time from the start until the last checkpoint was scored."""
        return (self.scored_at - self.started) / 60


class FigureLog:
    """Appends every figure of a run to figures.jsonl as soon as it is measured."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **figures) -> None:
        """One JSON line, flushed to disk."""
        with self.path.open("a") as file:
            file.write(json.dumps(figures) + "\n")


@dataclass(frozen=True)
class BenchmarkResult:
    """The figures of one run, in nats per predicted frame."""

    data_set: str
    test_nll: float
    validation_nll: float
    best_step: int  # optimizer steps of the best weights
    steps: int  # optimizer steps done
    epochs: float  # passes over the transposed training pieces, with the fraction of the last one
    training_minutes: float  # until the last checkpoint was scored
    test_frames: int  # the divisor of the test figure
    uniform_test_nll: float
    bernoulli_test_nll: float
    bernoulli_validation_nll: float
    run_dir: Path


@dataclass(frozen=True)
class _Baselines:
    uniform_test: float
    bernoulli_test: float
    bernoulli_validation: float


def run_benchmark(path: Path | str, setup: Setup, runs_root: Path | str = "runs") -> BenchmarkResult:
    """Train on the train split, choose the checkpoint on the valid split, score it once on the test split."""
    path, vocabulary = Path(path), FrameVocabulary()
    splits = load_splits(path)
    train, validation, test = (splits[name] for name in SPLITS)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    run_dir = Path(runs_root) / f"jsb-{fingerprint[:12]}-{time.strftime('%Y%m%d-%H%M%S')}"
    figures = FigureLog(run_dir / FIGURES_FILE)
    baselines = _baselines(vocabulary, train, validation, test, figures)
    selector = CheckpointSelector(setup, validation, run_dir, figures)
    _train(path, setup, run_dir, fingerprint, train, validation, selector)
    selector.model.load_weights(run_dir / BEST_WEIGHTS)
    test_nll = model_nll(vocabulary, lstm_logits(selector.model), test)
    figures.write(kind="test", step=selector.best_step, test_nll=test_nll, valid_nll=selector.best_nll)
    return BenchmarkResult(
        data_set_name(path), test_nll, selector.best_nll, selector.best_step, selector.step, selector.epochs,
        selector.minutes, sum(len(piece) - 1 for piece in test), baselines.uniform_test, baselines.bernoulli_test,
        baselines.bernoulli_validation, run_dir,
    )  # fmt: skip


def _baselines(vocabulary, train, validation, test, figures: FigureLog) -> _Baselines:
    """The sanity baselines, measured (and written down) before training starts."""
    bernoulli = bernoulli_logits(vocabulary, key_probabilities(train))
    baselines = _Baselines(
        model_nll(vocabulary, bernoulli_logits(vocabulary, np.full(KEYS, 0.5)), test),
        model_nll(vocabulary, bernoulli, test),
        model_nll(vocabulary, bernoulli, validation),
    )
    figures.write(kind="baselines", **{name: getattr(baselines, name) for name in baselines.__dataclass_fields__})
    return baselines


def _train(path, setup, run_dir, fingerprint, train, validation, selector: CheckpointSelector) -> None:
    """Train with the project's own `train_sequences` until the budget is spent; score where it stopped too."""
    vocabulary = FrameVocabulary()
    training = [vocabulary.frames_to_tokens(piece) for piece in transposed_pieces(train)]
    sequences, share = arrange_for_validation(
        training, [vocabulary.frames_to_tokens(piece) for piece in validation], setup.train.seed
    )
    config = replace(setup.train, validation_share=share)
    model = replace(setup.model, vocabulary_size=len(vocabulary))
    info = bundle.BundleInfo(model, vocabulary, fingerprint, [path.name], config)
    log.info("training on %d transposed pieces (%d tokens) for up to %.0f min in %s",
             len(training), sum(map(len, training)), setup.minutes, run_dir)  # fmt: skip
    result = train_sequences(sequences, run_dir, info, should_stop=selector.should_stop,
                             on_checkpoint=selector.on_checkpoint)  # fmt: skip
    if result.steps_done > selector.step:  # stopped between checkpoints: the last steps count too
        selector.score(result.steps_done)
    if selector.best_step == 0:
        raise JsbError(f"no optimizer step finished within {setup.minutes:g} minutes; allow more minutes")


# --- report -----------------------------------------------------------------------------


def result_table(result: BenchmarkResult, setup: Setup) -> str:
    """A markdown table of the published figures, the sanity baselines and this run."""
    model = setup.model
    ours = f"musicgen LSTM {model.layers}x{model.units}, frame tokens, transposed -5..+6"
    steps = f"{result.steps} ({result.epochs:.1f} epochs; best at {result.best_step})"
    rows = [
        ("uniform p = 0.5 per key (sanity, 88 ln 2)", result.uniform_test_nll, "", "", "", "this run"),
        ("independent Bernoulli per key, fitted on train (sanity)", result.bernoulli_test_nll,
         f"{result.bernoulli_validation_nll:.2f}", "", "", "this run"),
        *((name, nll, "", "", "", source) for name, nll, source in PUBLISHED.get(result.data_set, ())),
        (ours, result.test_nll, f"{result.validation_nll:.2f}", f"{result.training_minutes:.1f}", steps, "this run"),
    ]  # fmt: skip
    lines = [
        f"{result.data_set}, nats per predicted frame ({result.test_frames} test frames), lower is better",
        "",
        "| model | test NLL | valid NLL | training min | optimizer steps | source |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {nll:.2f} | {valid} | {minutes} | {steps} | {source} |"
              for name, nll, valid, minutes, steps, source in rows]  # fmt: skip
    if result.data_set not in PUBLISHED:
        lines.append(f"\nNo published figures known here for {result.data_set}.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jsb", description=__doc__.splitlines()[0])
    parser.add_argument(
        "path",
        nargs="?",
        default=default_path(),
        help=f"a piano-roll .mat (default: $MUSICGEN_JSB_MAT, or {DEFAULT_FILE} in "
        f"${DATA_VARIABLE} or in shared/data/polyphonic beside the repository)",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget (default 30)")
    every = FULL.train.checkpoint_steps
    parser.add_argument("--checkpoint-steps", type=int, default=every, help=f"steps between validations ({every})")
    parser.add_argument("--smoke", action="store_true", help="a few hundred steps of a tiny model")
    parser.add_argument("--runs", default="runs", help="folder for the run folder (default runs)")
    args = parser.parse_args(argv)
    if not args.path:
        parser.error(f"give the path of a .mat file, or set MUSICGEN_JSB_MAT or {DATA_VARIABLE}")
    if args.minutes <= 0:
        parser.error(f"--minutes must be above 0, got {args.minutes}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = replace(SMOKE if args.smoke else FULL, minutes=args.minutes)
    if not args.smoke:
        setup = replace(setup, train=replace(setup.train, checkpoint_steps=args.checkpoint_steps))
    try:
        result = run_benchmark(args.path, setup, args.runs)
    except JsbError as error:
        parser.exit(1, f"error: {error}\n")
    table = result_table(result, setup)
    (result.run_dir / RESULT_FILE).write_text(table + "\n")
    print(table)
    print(f"\nbest weights: {result.run_dir / BEST_WEIGHTS}; figures as measured: {result.run_dir / FIGURES_FILE}")


if __name__ == "__main__":
    main()
