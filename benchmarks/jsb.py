"""JSB Chorales: train musicgen's LSTM on piano-roll frames and report test NLL in nats per frame.

    python -m benchmarks.jsb PATH.mat [--minutes 30] [--smoke]   # PATH defaults to $MUSICGEN_JSB_MAT

A piece becomes tokens: `start`, then for every frame its sounding keys in ascending
order followed by `end_of_frame` (an empty frame is `end_of_frame` alone), then `end`.
The probability of a frame is the product of the probabilities of its tokens; at every
token the model's distribution is renormalised over the tokens legal there (a key above
the last key of the frame, or `end_of_frame`), so it is a proper distribution over frames.

Benchmark rule (Boulanger-Lewandowski et al. 2012): for every piece, predict frames
2..T from the frames before them (the LSTM reads the whole piece from `start` in one
pass); sum -log P(frame_t | frames < t) over all predicted frames of the split and
divide by the number of predicted frames (sum of T - 1).

Training uses musicgen's own `train_sequences` on every training piece in each of the
12 transpositions -5..+6 semitones; a transposition that would push a note off the 88
keys is dropped for that piece (never clamped, which would merge or reorder notes).
After every epoch the weights are scored on the valid split by the benchmark rule; the
best epoch is scored once on the test split. Training stops before an epoch that would
not finish within the time budget.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError
from scipy.special import logsumexp

from musicgen import bundle
from musicgen.dataset import split_by_file
from musicgen.model import ModelConfig, build_model
from musicgen.train import EpochReport, TrainConfig, train_sequences

log = logging.getLogger(__name__)

KEYS = 88  # piano keys; column k of a frame is MIDI pitch k + 21
LOWEST_PITCH = 21  # MIDI pitch of column 0
SHIFTS = tuple(range(-5, 7))  # transpositions in semitones: each of the 12 keys once
SPLITS = ("traindata", "validdata", "testdata")
BEST_WEIGHTS = "best_frame_nll.weights.h5"  # in the run folder: the epoch with the best valid NLL
KEY_PROBABILITY_FLOOR = 1e-6  # Bernoulli baseline: a key never seen in training costs ~14 nats, not infinity

PUBLISHED = (  # (model, test NLL in nats per frame, source); all but the last predict keys independently
    ("RNN", 8.91, "Bai et al. 2018, Table 1"),
    ("LSTM", 8.45, "Bai et al. 2018, Table 1"),
    ("GRU", 8.43, "Bai et al. 2018, Table 1"),
    ("TCN", 8.10, "Bai et al. 2018, Table 1"),
    ("RNN-NADE", 5.19, "Boulanger-Lewandowski et al. 2012 (about)"),
    ("DMM-Aug-NADE (variational bound)", 5.12, "Krishnan et al. 2017"),
)


@dataclass(frozen=True)
class Setup:
    """Model, training settings and time budget of one benchmark run."""

    model: ModelConfig
    train: TrainConfig  # validation_share is replaced so that the valid split is held out
    minutes: float = 30.0  # training time budget, per-epoch validation included


FULL = Setup(
    ModelConfig(vocabulary_size=KEYS + 3, embedding_size=64, layers=2, units=256, dropout=0.3),
    TrainConfig(epochs=1000, sequence_length=128, batch_size=64, learning_rate=2e-3),
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
    masked = np.where(vocabulary.legal_next(tokens[:-1]), logits[:-1], -np.inf)
    log_probabilities = masked - logsumexp(masked, axis=1, keepdims=True)
    targets = tokens[1:]
    scores = log_probabilities[np.arange(len(targets)), targets]
    ends_frame = targets == vocabulary.end_of_frame
    in_frame = (targets < vocabulary.keys) | ends_frame  # not the final `end`
    frame_of_target = np.cumsum(ends_frame) - ends_frame
    return np.bincount(frame_of_target[in_frame], scores[in_frame], minlength=int(ends_frame.sum()))


def split_nll(frame_log_probabilities_per_piece: Sequence[np.ndarray]) -> float:
    """Nats per predicted frame: -sum of log P over frames 2..T of every piece / sum of (T - 1)."""
    predicted = [log_probabilities[1:] for log_probabilities in frame_log_probabilities_per_piece]
    count = sum(len(frames) for frames in predicted)
    if count == 0:
        raise JsbError("the split has no frames to predict: every piece is one frame long")
    return -float(sum(frames.sum() for frames in predicted)) / count


LogitsFunction = Callable[[list[np.ndarray]], list[np.ndarray]]  # token arrays -> (L, vocabulary) logits each


def model_nll(vocabulary: FrameVocabulary, logits_of: LogitsFunction, pieces: Sequence[np.ndarray]) -> float:
    """The benchmark figure of a model, given as a function from token arrays to their logits."""
    tokens = [vocabulary.frames_to_tokens(piece) for piece in pieces]
    pairs = zip(tokens, logits_of(tokens), strict=True)
    return split_nll([frame_log_probabilities(vocabulary, piece, logits) for piece, logits in pairs])


def lstm_logits(model) -> LogitsFunction:
    """Logits of a musicgen LSTM, all pieces in one padded batch, each read whole from its start."""

    def logits_of(tokens: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.zeros((len(tokens), max(len(t) for t in tokens)), np.int32)  # padding follows: never read
        for row, piece in enumerate(tokens):
            batch[row, : len(piece)] = piece
        logits = np.asarray(model.predict_on_batch(batch), np.float64)
        return [logits[row, : len(piece)] for row, piece in enumerate(tokens)]

    return logits_of


def bernoulli_logits(vocabulary: FrameVocabulary, key_probabilities: np.ndarray) -> LogitsFunction:
    """Next-token log-probabilities of independent keys read in ascending order.

    After key k (k = -1 at a frame start), key j > k comes next with p_j * prod(1 - p_i, k < i < j)
    and end_of_frame with prod(1 - p_i, i > k): a frame's tokens multiply to prod(p or 1 - p) over keys.
    """
    p = np.asarray(key_probabilities, np.float64)
    log_silent = np.concatenate([[0.0], np.cumsum(np.log1p(-p))])  # [m]: log prod(1 - p_i, i < m)

    def logits_of(tokens: list[np.ndarray]) -> list[np.ndarray]:
        return [_bernoulli_rows(vocabulary, piece, np.log(p), log_silent) for piece in tokens]

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


class EpochSelector:
    """Scores each finished epoch on the valid split by the benchmark rule, keeps the best, watches the clock."""

    def __init__(self, setup: Setup, validation: list[np.ndarray], run_dir: Path):
        self.vocabulary, self.validation, self.run_dir = FrameVocabulary(), validation, run_dir
        self.model = build_model(setup.model)
        self.started = self.epoch_ended = time.monotonic()
        self.deadline = self.started + setup.minutes * 60
        self.best_nll, self.best_epoch, self.epochs = math.inf, 0, 0
        self.next_epoch_fits = True

    def on_epoch(self, report: EpochReport) -> None:
        """Load this epoch's weights (BackupAndRestore has just written them) and score them."""
        self.model.load_weights(self.run_dir / "backup" / "latest.weights.h5")
        nll = model_nll(self.vocabulary, lstm_logits(self.model), self.validation)
        self.epochs = report.epoch
        if nll < self.best_nll:
            self.best_nll, self.best_epoch = nll, report.epoch
            self.model.save_weights(self.run_dir / BEST_WEIGHTS)
        now = time.monotonic()
        epoch_seconds, self.epoch_ended = now - self.epoch_ended, now  # training, validation and this scoring
        self.next_epoch_fits = now + epoch_seconds <= self.deadline
        log.info(
            "epoch %d: loss %.4f, valid loss %.4f nats/token, valid NLL %.3f nats/frame%s, %.0f s, %.1f min in",
            report.epoch, report.loss, report.validation_loss or math.nan, nll,
            " (best)" if self.best_epoch == report.epoch else "", epoch_seconds, (now - self.started) / 60,
        )  # fmt: skip

    def should_stop(self) -> bool:
        """Stop before an epoch that would not finish in time, or when the time is up."""
        return not self.next_epoch_fits or time.monotonic() > self.deadline

    @property
    def minutes(self) -> float:
        """Time from the start until the last finished epoch was scored."""
        return (self.epoch_ended - self.started) / 60


@dataclass(frozen=True)
class BenchmarkResult:
    """The figures of one run, in nats per predicted frame."""

    test_nll: float
    validation_nll: float
    best_epoch: int
    epochs: int  # finished epochs
    training_minutes: float  # until the last finished epoch was scored
    test_frames: int  # the divisor of the test figure
    uniform_test_nll: float
    bernoulli_test_nll: float
    bernoulli_validation_nll: float
    run_dir: Path


def run_benchmark(path: Path | str, setup: Setup, runs_root: Path | str = "runs") -> BenchmarkResult:
    """Train on the train split, choose the epoch on the valid split, score it once on the test split."""
    path, vocabulary = Path(path), FrameVocabulary()
    splits = load_splits(path)
    train, validation, test = (splits[name] for name in SPLITS)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
    run_dir = Path(runs_root) / f"jsb-{fingerprint[:12]}-{time.strftime('%Y%m%d-%H%M%S')}"
    training = [vocabulary.frames_to_tokens(piece) for piece in transposed_pieces(train)]
    sequences, share = arrange_for_validation(
        training, [vocabulary.frames_to_tokens(piece) for piece in validation], setup.train.seed
    )
    info = bundle.BundleInfo(
        replace(setup.model, vocabulary_size=len(vocabulary)),
        vocabulary,
        fingerprint,
        [path.name],
        replace(setup.train, validation_share=share),
    )
    log.info("training on %d transposed pieces (%d tokens) for up to %.0f min in %s",
             len(training), sum(map(len, training)), setup.minutes, run_dir)  # fmt: skip
    selector = EpochSelector(replace(setup, model=info.model_config), validation, run_dir)
    train_sequences(sequences, run_dir, info, selector.on_epoch, selector.should_stop)
    if selector.best_epoch == 0:
        raise JsbError(f"no epoch finished within {setup.minutes:g} minutes; allow more minutes")
    selector.model.load_weights(run_dir / BEST_WEIGHTS)
    bernoulli = bernoulli_logits(vocabulary, key_probabilities(train))
    return BenchmarkResult(
        test_nll=model_nll(vocabulary, lstm_logits(selector.model), test),
        validation_nll=selector.best_nll,
        best_epoch=selector.best_epoch,
        epochs=selector.epochs,
        training_minutes=selector.minutes,
        test_frames=sum(len(piece) - 1 for piece in test),
        uniform_test_nll=model_nll(vocabulary, bernoulli_logits(vocabulary, np.full(KEYS, 0.5)), test),
        bernoulli_test_nll=model_nll(vocabulary, bernoulli, test),
        bernoulli_validation_nll=model_nll(vocabulary, bernoulli, validation),
        run_dir=run_dir,
    )


# --- report -----------------------------------------------------------------------------


def result_table(result: BenchmarkResult, setup: Setup) -> str:
    """A markdown table of the published figures, the sanity baselines and this run."""
    model = setup.model
    ours = f"musicgen LSTM {model.layers}x{model.units}, frame tokens, transposed -5..+6"
    rows = [
        ("uniform p = 0.5 per key (sanity, 88 ln 2)", result.uniform_test_nll, "", "", "", "this run"),
        ("independent Bernoulli per key, fitted on train (sanity)", result.bernoulli_test_nll,
         f"{result.bernoulli_validation_nll:.2f}", "", "", "this run"),
        *((name, nll, "", "", "", source) for name, nll, source in PUBLISHED),
        (ours, result.test_nll, f"{result.validation_nll:.2f}", f"{result.training_minutes:.1f}",
         f"{result.epochs} (best {result.best_epoch})", "this run"),
    ]  # fmt: skip
    lines = [
        f"JSB Chorales, nats per predicted frame ({result.test_frames} test frames), lower is better",
        "",
        "| model | test NLL | valid NLL | training min | epochs | source |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {nll:.2f} | {valid} | {minutes} | {epochs} | {source} |"
              for name, nll, valid, minutes, epochs, source in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jsb", description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=os.environ.get("MUSICGEN_JSB_MAT"),
                        help="JSB_Chorales.mat (default: $MUSICGEN_JSB_MAT)")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget (default 30)")
    parser.add_argument("--smoke", action="store_true", help="a few hundred steps of a tiny model")
    parser.add_argument("--runs", default="runs", help="folder for the run folder (default runs)")
    args = parser.parse_args(argv)
    if not args.path:
        parser.error("give the path of JSB_Chorales.mat or set MUSICGEN_JSB_MAT")
    if args.minutes <= 0:
        parser.error(f"--minutes must be above 0, got {args.minutes}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = replace(SMOKE if args.smoke else FULL, minutes=args.minutes)
    try:
        result = run_benchmark(args.path, setup, args.runs)
    except JsbError as error:
        parser.exit(1, f"error: {error}\n")
    print(result_table(result, setup))
    print(f"\nbest weights: {result.run_dir / BEST_WEIGHTS}")


if __name__ == "__main__":
    main()
