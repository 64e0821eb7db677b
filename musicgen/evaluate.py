"""How good a trained model is, measured on music it never saw, and which temperatures suit it.

Four parts, all seeded and deterministic:

1. Held-out likelihood. The split of files the model was trained with is rebuilt from its
   bundle (file names, validation share, seed). Each held-out file's tokens are read by the
   LSTM in one pass, which predicts ids 2..n from the ids before them; the best n-gram
   (orders 1..5, Kneser-Ney) is fitted on the training files and predicts the same ids.
2. Style. Pieces generated at each temperature, and the held-out pieces, are measured with
   `musicgen.metrics` (means weighted by piece length). Their `gap` is how far the generated
   means are from the held-out means, in standard deviations of the training pieces,
   averaged over the measures.
3. Originality. Every piece is checked against an index of the training files.
4. Temperature guide. The temperatures whose gap is within STYLE_TOLERANCE of the best and
   whose pieces copy no long passage; the contiguous range around the best is recommended
   and cached in the bundle folder as evaluation.json, for the app's temperature slider.
"""

from __future__ import annotations

import json
import logging
import os
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

import musicgen
from musicgen.bundle import (  # noqa: F401  (read_recommendation is read where the figures are written)
    EVALUATION_FILE,
    Bundle,
    BundleInfo,
    load_bundle,
    read_recommendation,
    weights_digest,
)
from musicgen.corpus import Corpus, load_paths
from musicgen.dataset import split_by_file
from musicgen.metrics import corpus_style, histogram_distance, measure_style
from musicgen.ngram import OrderScore, best_ngram
from musicgen.originality import (
    COPY_THRESHOLD_NOTES,
    PHRASE_NOTES,
    CorpusIndex,
    index_corpus,
    measure_originality,
)
from musicgen.sample import SampleConfig, Sampler
from musicgen.score import Score
from musicgen.tokens import Vocabulary, encode, quantize

REQUIRED_IMPROVEMENT = 0.15  # a shipped model must beat the best n-gram's NLL by this share
NGRAM_ORDERS = range(1, 6)
STYLE_TOLERANCE = 0.5  # training-piece standard deviations (mean over the measures) above the best gap
MAX_PIECES = 64  # generated pieces per temperature
DEFAULT_TEMPERATURES = (0.6, 0.8, 1.0, 1.2)
DEFAULT_SAMPLING = SampleConfig()  # pure temperature sampling: no top-k, no top-p, no key lock
LINE_WIDTH = 100  # characters, for the long lines of the printed report
EXACT_SPLIT = "rebuilt exactly as in training (the corpus fingerprint matches)"
# Style measures of the tables: key, header, smallest spread (so a measure on which the
# training pieces all agree does not turn a difference too small to hear into a large gap).
# The last item is how the table prints the measure.
STYLE_COLUMNS = (
    ("pitch_class_distance", "pc distance", 0.01, ".3f"),  # bits, Jensen-Shannon to the training corpus
    ("scale_consistency", "in scale", 0.01, ".1%"),  # share of notes in the best-fitting scale
    ("pitch_range", "range", 1.0, ".1f"),  # semitones
    ("polyphony", "polyphony", 0.1, ".2f"),  # pitches sounding at once
    ("notes_per_beat", "notes/beat", 0.1, ".2f"),
    ("empty_beat_share", "empty beats", 0.01, ".1%"),
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Likelihood:
    """How well a model predicts the held-out tokens."""

    nll_per_token: float  # nats, mean over the predicted tokens
    accuracy: float  # share of tokens that were the model's likeliest guess, 0..1
    tokens: int  # tokens predicted (each file's tokens after its first)


@dataclass(frozen=True)
class Split:
    """Which of the given files count as training music and which the model never saw."""

    training: tuple[str, ...]  # file names, in the order given
    held_out: tuple[str, ...]
    note: str | None  # why this is not exactly the training split, in plain words; None when it is


@dataclass(frozen=True)
class PieceSet:
    """Style and originality of a set of pieces: the held-out music or one temperature's output."""

    temperature: float | None  # None for the held-out music
    pieces: int
    median_notes: float  # notes per piece (generated pieces may end before the length asked for)
    style: dict[str, float]  # mean of each STYLE_COLUMNS measure, weighted by the pieces' length
    style_gap: float  # mean over the measures of |mean - held-out mean| / training spread
    mean_longest_copy: float  # notes of the longest passage found in the training files, mean
    max_longest_copy: int  # notes, the longest over all the pieces
    copied_phrase_share: float  # mean share of PHRASE_NOTES-note phrases found in the training files

    @property
    def label(self) -> str:
        """'held-out music' or 'temperature 0.8'."""
        return "held-out music" if self.temperature is None else f"temperature {self.temperature:g}"

    @property
    def copies_long_passages(self) -> bool:
        """True when some piece copies COPY_THRESHOLD_NOTES notes or more in a row."""
        return self.max_longest_copy >= COPY_THRESHOLD_NOTES


@dataclass(frozen=True)
class EvaluationReport:
    """Everything `evaluate_bundle` measured."""

    bundle: str  # the model folder
    split: Split
    lstm: Likelihood
    ngram: Likelihood  # of the best order
    ngram_orders: tuple[OrderScore, ...]  # every order tried, fitted on the training files
    held_out: PieceSet
    temperatures: tuple[PieceSet, ...]  # in the order asked
    recommended: tuple[float, float] | None  # lowest and highest recommended temperature

    @property
    def improvement(self) -> float:
        """1 - LSTM NLL / n-gram NLL: the share of the n-gram's uncertainty the LSTM removes."""
        return 1 - self.lstm.nll_per_token / self.ngram.nll_per_token

    @property
    def ngram_order(self) -> int:
        """Order of the best n-gram."""
        return min(self.ngram_orders, key=lambda score: score.nll_per_token).order


def evaluate_bundle(
    bundle_path: str | os.PathLike,
    midi_paths: Sequence[str | os.PathLike],
    temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
    pieces: int = 8,
    sample_config: SampleConfig = DEFAULT_SAMPLING,
) -> EvaluationReport:
    """Measure a model on the given training files' held-out part; cache the key figures in its folder.

    sample_config: the other sampling settings (top-k, top-p, key lock, tempo); temperature,
    seed, variations and length are set here, the length to that of a typical held-out piece.
    """
    _check_request(temperatures, pieces)
    bundle = load_bundle(bundle_path)
    corpus = load_paths(midi_paths)
    split = rebuild_split(corpus, bundle.info)
    music = dict(zip(corpus.names, (quantize(s, bundle.info.vocabulary) for s in corpus.scores), strict=True))
    training, held_out = [music[n] for n in split.training], [music[n] for n in split.held_out]
    lstm, ngram, ngram_orders = compare_likelihood(bundle, training, held_out)
    config = _length_like(held_out, sample_config)
    held_out_set, generated = measure_piece_sets(bundle, training, held_out, temperatures, pieces, config)
    recommended = recommend_temperatures(generated)
    report = EvaluationReport(
        str(bundle_path), split, lstm, ngram, tuple(ngram_orders), held_out_set, generated, recommended
    )
    write_evaluation(bundle.path, report)
    return report


def _check_request(temperatures: Sequence[float], pieces: int) -> None:
    if not temperatures:
        raise ValueError("give at least one temperature to try")
    for temperature in temperatures:
        SampleConfig(temperature=temperature)  # says plainly when one is out of range
    if isinstance(pieces, bool) or not isinstance(pieces, int) or not 1 <= pieces <= MAX_PIECES:
        raise ValueError(f"pieces must be in range 1..{MAX_PIECES}, got {pieces!r}")


# --- 1. the split and the held-out likelihood ---------------------------------------------


def rebuild_split(corpus: Corpus, info: BundleInfo) -> Split:
    """The training files and the files the model never saw, among those in `corpus`.

    When the corpus is the model's own (same fingerprint), this is exactly the split it was
    trained with. Otherwise files are matched by name and the split's `note` says so.
    """
    _check_unique_names(corpus.names)
    exact = corpus.fingerprint == info.fingerprint
    if exact and set(corpus.names) != set(info.file_names):
        raise ValueError(
            "these are the files the model was trained on, but some have other names now; "
            "give them the names they had in training so the held-out files can be found"
        )
    trained_on = set(training_names(info))
    split = Split(
        training=tuple(name for name in corpus.names if name in trained_on),
        held_out=tuple(name for name in corpus.names if name not in trained_on),
        note=None if exact else _mismatch_note(corpus, info),
    )
    _check_split(split, info)
    return split


def training_names(info: BundleInfo) -> list[str]:
    """Names of the files the model learned from: its corpus without the validation files."""
    if info.train_config is None:
        return list(info.file_names)  # the split is unknown: every file may have been learned
    config = info.train_config
    # split_by_file looks only at the number of files and the seed, so splitting the names
    # gives the same split as the token arrays in training.
    training, _ = split_by_file(info.file_names, config.validation_share, config.seed)
    return training


def _check_unique_names(names: Sequence[str]) -> None:
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ValueError(f"two files are named {repeated[0]}: rename one so the held-out ones can be told apart")


def _mismatch_note(corpus: Corpus, info: BundleInfo) -> str:
    known = sum(name in set(info.file_names) for name in corpus.names)
    new = len(corpus.names) - known
    return (
        "these files are not exactly the music the model was trained on (the corpus fingerprint "
        f"differs): {known} of its {len(info.file_names)} files are among them and {new} "
        f"{'is' if new == 1 else 'are'} new to it. Files are matched by name, so a file changed "
        "since training counts as what it was then."
    )


def _check_split(split: Split, info: BundleInfo) -> None:
    if not split.held_out:
        held_out_in_training = len(info.file_names) - len(training_names(info))
        reason = "" if held_out_in_training else " (it was trained with no validation files)"
        raise ValueError(
            f"every given file was used to train this model{reason}, so none is left to measure it "
            "on: add MIDI files it never saw"
        )
    if not split.training:
        raise ValueError(
            "none of the given files is one the model learned from, so the n-gram baseline and the "
            "copy check have nothing to compare with: give the model's training files too"
        )


def compare_likelihood(
    bundle: Bundle, training: Sequence[Score], held_out: Sequence[Score]
) -> tuple[Likelihood, Likelihood, list[OrderScore]]:
    """The likelihood of the held-out pieces under the LSTM and under the best n-gram fitted on the
    training pieces, and the scores of every n-gram order."""
    vocabulary = bundle.info.vocabulary
    training_ids, held_out_ids = _to_ids(training, vocabulary), _to_ids(held_out, vocabulary)
    lstm = lstm_likelihood(bundle.model, held_out_ids)
    _, orders = best_ngram(training_ids, held_out_ids, len(vocabulary), NGRAM_ORDERS)
    best = min(orders, key=lambda score: score.nll_per_token)
    return lstm, Likelihood(best.nll_per_token, best.accuracy, lstm.tokens), orders


def _to_ids(scores: Sequence[Score], vocabulary: Vocabulary) -> list[np.ndarray]:
    return [np.asarray(encode(score, vocabulary), np.int32) for score in scores]


def lstm_likelihood(model, sequences: Sequence[np.ndarray]) -> Likelihood:
    """NLL per token (nats) and accuracy on ids 2..n of each sequence, in bounded memory whatever their lengths."""
    from musicgen.model import chunked_logits  # TensorFlow only when a model is scored

    inputs = [np.asarray(ids, np.int32)[:-1] for ids in sequences if len(ids) >= 2]
    targets = [np.asarray(ids)[1:] for ids in sequences if len(ids) >= 2]
    total, correct, count = 0.0, 0, 0
    for index, start, logits in chunked_logits(model, inputs):
        nll, hits = score_logits(logits, targets[index][start : start + len(logits)])
        total, correct, count = total + nll, correct + hits, count + len(logits)
    if not count:
        raise ValueError("there is nothing to predict: every held-out piece has fewer than 2 tokens")
    return Likelihood(total / count, correct / count, count)


def score_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[float, int]:
    """Summed NLL (nats) of the targets and how many were the likeliest id; logits (n, V), targets (n,)."""
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_normaliser = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    target_logits = logits[np.arange(len(targets)), targets]
    return float((log_normaliser - target_logits).sum()), int((logits.argmax(axis=1) == targets).sum())


# --- 2. and 3. style and originality --------------------------------------------------------


def measure_piece_sets(
    bundle: Bundle,
    training: Sequence[Score],
    held_out: Sequence[Score],
    temperatures: Sequence[float],
    pieces: int,
    sample_config: SampleConfig,
) -> tuple[PieceSet, tuple[PieceSet, ...]]:
    """Style and originality of the held-out pieces and of `pieces` generated at each temperature."""
    reference = _StyleReference.of(training, held_out)
    index = index_corpus(training, bundle.info.vocabulary.config.steps_per_beat)
    sampler = Sampler(bundle.model, bundle.info.vocabulary, bundle.info.openings)
    generated = tuple(
        _piece_set(generate_pieces(sampler, replace(sample_config, temperature=t), pieces), reference, index, t)
        for t in temperatures
    )
    return _piece_set(held_out, reference, index, None), generated


def generate_pieces(sampler: Sampler, config: SampleConfig, pieces: int) -> list[Score]:
    """`pieces` pieces in batches of up to 8, batch b with seed b (the same seeds at every temperature)."""
    scores = []
    for seed, start in enumerate(range(0, pieces, 8)):
        batch = replace(config, seed=seed, variations=min(8, pieces - start))
        scores += sampler.scores(batch)
    return scores


def _length_like(held_out: Sequence[Score], config: SampleConfig) -> SampleConfig:
    """The config with a length limit of the median held-out piece, and room for twice its notes."""
    beats = float(np.median([score.end_beat for score in held_out]))
    notes = float(np.median([len(score.notes) for score in held_out]))
    seconds = min(max(beats * 60 / config.bpm, 1.0), 600.0)
    return replace(config, max_seconds=seconds, max_notes=int(min(max(2 * notes, 16), 5000)))


@dataclass(frozen=True)
class _StyleReference:
    """What generated styles are compared with."""

    histogram: tuple[float, ...]  # pooled pitch-class shares of the training pieces
    spread: dict[str, float]  # standard deviation of each measure over the training pieces, floored
    held_out: dict[str, float]  # mean of each measure over the held-out pieces

    @classmethod
    def of(cls, training: Sequence[Score], held_out: Sequence[Score]) -> _StyleReference:
        histogram = corpus_style(training).pitch_class_histogram
        rows = [piece_style(score, histogram) for score in training]
        spread = {key: max(float(np.std([r[key] for r in rows])), floor) for key, _, floor, _ in STYLE_COLUMNS}
        return cls(histogram, spread, mean_style(held_out, histogram))

    def gap(self, style: dict[str, float]) -> float:
        """Mean over the measures of |style - held-out| in training standard deviations."""
        differences = [abs(style[key] - self.held_out[key]) / self.spread[key] for key in self.spread]
        return float(np.mean(differences))


def piece_style(score: Score, corpus_histogram: Sequence[float]) -> dict[str, float]:
    """The STYLE_COLUMNS measures of one piece."""
    measures = measure_style(score)
    distance = histogram_distance(measures.pitch_class_histogram, corpus_histogram)
    others = {key: getattr(measures, key) for key, *_ in STYLE_COLUMNS[1:]}
    return {"pitch_class_distance": distance} | others


def mean_style(scores: Sequence[Score], corpus_histogram: Sequence[float]) -> dict[str, float]:
    """The mean of each STYLE_COLUMNS measure over the pieces, weighted by their length in beats.

    Weighted, so that a piece the model ended after a few notes does not count as much as a whole one.
    """
    rows, beats = [piece_style(score, corpus_histogram) for score in scores], [s.end_beat for s in scores]
    return {key: float(np.average([row[key] for row in rows], weights=beats)) for key, *_ in STYLE_COLUMNS}


def _piece_set(
    scores: Sequence[Score], reference: _StyleReference, index: CorpusIndex, temperature: float | None
) -> PieceSet:
    style = mean_style(scores, reference.histogram)
    copies = [measure_originality(score, index) for score in scores]
    return PieceSet(
        temperature=temperature,
        pieces=len(scores),
        median_notes=float(np.median([len(score.notes) for score in scores])),
        style=style,
        style_gap=reference.gap(style),
        mean_longest_copy=float(np.mean([copy.longest_copied_notes for copy in copies])),
        max_longest_copy=max(copy.longest_copied_notes for copy in copies),
        copied_phrase_share=float(np.mean([copy.copied_ngram_share for copy in copies])),
    )


# --- 4. the temperature guide ---------------------------------------------------------------


def recommend_temperatures(sets: Sequence[PieceSet]) -> tuple[float, float] | None:
    """The lowest and highest temperature of the run around the best one that keeps the style and copies
    nothing long; None when every temperature copies long passages."""
    ordered = sorted(sets, key=lambda piece_set: piece_set.temperature)
    original = [piece_set for piece_set in ordered if not piece_set.copies_long_passages]
    if not original:
        return None
    best = min(original, key=lambda piece_set: piece_set.style_gap)
    good = [not s.copies_long_passages and s.style_gap <= best.style_gap + STYLE_TOLERANCE for s in ordered]
    low = high = ordered.index(best)
    while low > 0 and good[low - 1]:
        low -= 1
    while high < len(ordered) - 1 and good[high + 1]:
        high += 1
    return ordered[low].temperature, ordered[high].temperature


def write_evaluation(folder: Path, report: EvaluationReport) -> None:
    """Cache the key figures and the recommended range in the bundle folder."""
    figures = {
        "musicgen_version": musicgen.__version__,
        "weights_sha256": weights_digest(folder),  # ties the figures to these weights
        "held_out_files": list(report.split.held_out),
        "exact_split": report.split.note is None,
        "lstm": asdict(report.lstm),
        "ngram": asdict(report.ngram) | {"order": report.ngram_order},
        "improvement": report.improvement,
        "temperatures": [_set_figures(piece_set) for piece_set in report.temperatures],
        "recommended_temperatures": list(report.recommended) if report.recommended else None,
    }
    temporary = folder / (EVALUATION_FILE + ".tmp")
    temporary.write_text(json.dumps(figures, indent=1))
    temporary.replace(folder / EVALUATION_FILE)


def _set_figures(piece_set: PieceSet) -> dict:
    return {
        "temperature": piece_set.temperature,
        "style_gap": piece_set.style_gap,
        "mean_longest_copy": piece_set.mean_longest_copy,
        "max_longest_copy": piece_set.max_longest_copy,
        "copied_phrase_share": piece_set.copied_phrase_share,
    }


# --- the printed report ---------------------------------------------------------------------


def format_report(report: EvaluationReport) -> str:
    """The report as plain text tables."""
    parts = (_split_text, _likelihood_text, _style_text, _copy_text, _guide_text)
    return "\n\n".join(part(report) for part in parts)


def _split_text(report: EvaluationReport) -> str:
    split = report.split
    lines = [
        f"Model: {report.bundle}",
        f"Files: {len(split.training)} training, {len(split.held_out)} held out (never seen by the model)",
        "Split: " + (EXACT_SPLIT if split.note is None else "NOTE: " + split.note),
    ]
    return "\n".join(textwrap.fill(line, LINE_WIDTH, subsequent_indent="  ") for line in lines)


def _likelihood_text(report: EvaluationReport) -> str:
    rows = [
        [name, f"{likelihood.nll_per_token:.3f}", f"{likelihood.accuracy:.1%}"]
        for name, likelihood in (
            ("LSTM", report.lstm),
            (f"best n-gram (order {report.ngram_order})", report.ngram),
        )
    ]
    verdict = "met" if report.improvement >= REQUIRED_IMPROVEMENT else "NOT met"
    orders = ", ".join(f"{score.order}: {score.nll_per_token:.3f}" for score in report.ngram_orders)
    return "\n".join(
        [
            f"Held-out likelihood ({report.lstm.tokens:,} tokens predicted, each from the tokens before it)",
            _table(["model", "nats/token", "accuracy"], rows),
            f"LSTM improvement over the best n-gram: {report.improvement:.2%} "
            f"(target at least {REQUIRED_IMPROVEMENT:.0%}: {verdict})",
            f"n-gram nats/token by order: {orders}",
        ]
    )


def _style_text(report: EvaluationReport) -> str:
    headers = ["pieces", *(header for _, header, *_ in STYLE_COLUMNS), "gap"]
    rows = [
        [s.label, *(f"{s.style[key]:{form}}" for key, *_, form in STYLE_COLUMNS), f"{s.style_gap:.2f}"]
        for s in (report.held_out, *report.temperatures)
    ]
    title = (
        "Style (means over the pieces, weighted by their length; pc distance: bits from the training "
        "corpus's pitch classes; gap: distance from the held-out music in training-piece standard deviations)"
    )
    return textwrap.fill(title, LINE_WIDTH) + "\n" + _table(headers, rows)


def _copy_text(report: EvaluationReport) -> str:
    headers = ["pieces", "count", "notes (median)", "longest copy, mean", "max", f"{PHRASE_NOTES}-note phrases found"]
    rows = [
        [
            s.label,
            f"{s.pieces}",
            f"{s.median_notes:.0f}",
            f"{s.mean_longest_copy:.1f}",
            f"{s.max_longest_copy}",
            f"{s.copied_phrase_share:.0%}",
        ]
        for s in (report.held_out, *report.temperatures)
    ]
    title = (
        f"Originality (notes in a row found in the {len(report.split.training)} training files; "
        f"{COPY_THRESHOLD_NOTES} or more sounds like a copy)"
    )
    return title + "\n" + _table(headers, rows)


def _guide_text(report: EvaluationReport) -> str:
    if report.recommended is None:
        return f"Recommended temperature: none of those tried; each copied {COPY_THRESHOLD_NOTES}+ notes"
    low, high = report.recommended
    span = f"{low:g}" if low == high else f"{low:g} to {high:g}"
    return (
        f"Recommended temperature: {span} (style gap within {STYLE_TOLERANCE} of the best, "
        f"no passage of {COPY_THRESHOLD_NOTES} notes copied)"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the rest right-aligned."""
    widths = [max(len(str(row[column])) for row in [headers, *rows]) for column in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])
