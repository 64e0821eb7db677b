"""Many MIDI files at once: the scores to train on, and one plain report per file.

A file is skipped, with its reason in its report, when `midi.read` refuses it, when it
has only drums (the model learns melody and harmony; tokens leave drums out by default),
when it would make more than `tokens.MAX_PIECE_TOKENS` tokens, or when it holds the same
bytes as a file already loaded. A whole upload may make at most MAX_CORPUS_TOKENS. Repairs that `midi.read` warns
about go into the report instead of being printed. The fingerprint identifies the music
used, not the file names or their order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from musicgen import midi, tokens
from musicgen.score import Score

MIDI_SUFFIXES = (".mid", ".midi", ".kar", ".rmi")  # compared in lower case
INSTRUMENT_FAMILIES = (  # General MIDI groups programs in sixteen families of eight
    "piano",
    "chromatic percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth lead",
    "synth pad",
    "synth effects",
    "ethnic",
    "percussive",
    "sound effects",
)

ONLY_DRUMS = "it has only drums, and the model learns melody and harmony, not drums"
# Most tokens in all the music of one training: five pieces at tokens.MAX_PIECE_TOKENS, or
# 13 times the 348 bundled chorales (234,000 tokens). 12 MB as int32; an epoch over it takes
# about two minutes at the 26,000 tokens a second that training runs on the hosted 2 cores.
MAX_CORPUS_TOKENS = 3_000_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileReport:
    """What became of one file."""

    name: str
    notes: int = 0  # melodic notes
    tracks: int = 0  # tracks holding notes
    instruments: tuple[str, ...] = ()  # General MIDI families of the melodic notes, e.g. "piano"
    drum_notes_left_out: int = 0
    seconds: float = 0.0  # length of the piece
    warnings: tuple[str, ...] = ()  # repairs made while reading
    error: str | None = None  # why the file was skipped; None when it is used

    @property
    def summary(self) -> str:
        """One plain line, such as 'bwv269.mid: 302 notes, 4 tracks, piano, 0:56'."""
        if self.error is not None:
            return f"{self.name}: skipped — {self.error}"
        minutes, seconds = divmod(round(self.seconds), 60)
        parts = [_count(self.notes, "note"), _count(self.tracks, "track"), ", ".join(self.instruments)]
        parts.append(f"{minutes}:{seconds:02d}")
        if self.drum_notes_left_out:
            parts.append(f"{_count(self.drum_notes_left_out, 'drum note')} left out")
        repairs = f" ({'; '.join(self.warnings)})" if self.warnings else ""
        return f"{self.name}: {', '.join(parts)}{repairs}"


@dataclass(frozen=True)
class Corpus:
    """The scores of the usable files, and a report for every file given."""

    names: tuple[str, ...]  # of the files used, in the order given
    scores: tuple[Score, ...]  # one per name
    reports: tuple[FileReport, ...]  # one per file given, used or skipped, in the order given
    fingerprint: str  # sha256 hex over the contents of the files used

    @property
    def summary(self) -> str:
        """One plain line, such as '19 of 20 files used: 4,212 notes, 12:34 of music'."""
        used = [report for report in self.reports if report.error is None]
        minutes, seconds = divmod(round(sum(report.seconds for report in used)), 60)
        notes = _count(sum(report.notes for report in used), "note")
        return f"{len(used)} of {len(self.reports)} files used: {notes}, {minutes}:{seconds:02d} of music"


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may hold: files beyond either limit are skipped with the reason, before they are read."""

    max_files: int = 100  # files read from one upload
    max_notes: int = 400_000  # notes of all its files together (about 60 MB of scores in memory; 348 chorales: 80,000)


def load_corpus(
    sources: Iterable[tuple[str, bytes | str | os.PathLike]],
    vocabulary: tokens.Vocabulary = tokens.Vocabulary(),
    limits: UploadLimits | None = None,
) -> Corpus:
    """A corpus from (name, file bytes or path) pairs, such as uploaded files; `vocabulary` counts their tokens.

    limits: for uploads; None reads every file (a collection on the user's own disk)."""
    names, scores, reports, used = [], [], [], {}  # used: content digest -> name
    for count, (name, source) in enumerate(sources, 1):
        over = _over_upload_limits(limits, count, sum(len(score.notes) for score in scores))
        score, report, digest = (
            (None, FileReport(name, error=over), "") if over else _read_file(name, source, vocabulary)
        )
        if report.error is None and digest in used:
            report = replace(report, error=f"it holds the same music as {used[digest]}")
        if report.error is None:
            used[digest] = name
            names.append(name)
            scores.append(score)
        else:
            log.info("%s", report.summary)
        reports.append(report)
    return Corpus(tuple(names), tuple(scores), tuple(reports), _fingerprint(used))


def _over_upload_limits(limits: UploadLimits | None, file_number: int, notes_so_far: int) -> str | None:
    """Why the file_number-th file of an upload is not read, or None."""
    if limits is not None and file_number > limits.max_files:
        return f"only the first {limits.max_files} files of an upload are used"
    if limits is not None and notes_so_far >= limits.max_notes:
        return f"the files before it already hold {limits.max_notes:,} notes, the most one upload may have"
    return None


def load_paths(paths: Iterable[str | os.PathLike], vocabulary: tokens.Vocabulary = tokens.Vocabulary()) -> Corpus:
    """A corpus from MIDI files on disk, each named by its file name."""
    return load_corpus(((Path(path).name, path) for path in paths), vocabulary)


def load_folder(folder: str | os.PathLike, vocabulary: tokens.Vocabulary = tokens.Vocabulary()) -> Corpus:
    """A corpus from every MIDI file in a folder and its subfolders, named by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in MIDI_SUFFIXES)
    return load_corpus(((path.relative_to(folder).as_posix(), path) for path in paths), vocabulary)


def corpus_to_ids(corpus: Corpus, vocabulary: tokens.Vocabulary) -> list[np.ndarray]:
    """The token ids of every score, as int32 arrays; ValueError, before making any, when there are too many."""
    total = 0
    for name, score in zip(corpus.names, corpus.scores, strict=True):
        count = tokens.count_tokens(score, vocabulary)
        if count > tokens.MAX_PIECE_TOKENS:
            raise ValueError(f"{name}: {_too_many_tokens(count)}; leave it out or shorten it")
        total += count
    if total > MAX_CORPUS_TOKENS:
        raise ValueError(
            f"all your music together would make {total:,} tokens, more than the {MAX_CORPUS_TOKENS:,} "
            "one training may use: upload fewer or shorter files"
        )
    return [np.asarray(tokens.encode(score, vocabulary), dtype=np.int32) for score in corpus.scores]


def _why_unusable(score: Score, vocabulary: tokens.Vocabulary) -> str | None:
    """Why a score that was read cannot be trained on, or None."""
    if not score.melodic_notes:
        return ONLY_DRUMS
    count = tokens.count_tokens(score, vocabulary)
    return _too_many_tokens(count) if count > tokens.MAX_PIECE_TOKENS else None


def _too_many_tokens(count: int) -> str:
    """The reason given for a piece over tokens.MAX_PIECE_TOKENS."""
    return (
        f"it would make {count:,} tokens, more than the {tokens.MAX_PIECE_TOKENS:,} one piece may have "
        "(long silences and long-held notes take many)"
    )


def _read_file(
    name: str, source: bytes | str | os.PathLike, vocabulary: tokens.Vocabulary
) -> tuple[Score | None, FileReport, str]:
    """The score of one file, its report and the sha256 of its bytes (None and "" when unreadable)."""
    try:
        score, repairs = midi.read_with_repairs(source)
    except midi.MidiError as error:
        return None, FileReport(name, error=str(error)), ""
    melodic, drums = len(score.melodic_notes), len(score.notes) - len(score.melodic_notes)
    report = FileReport(name, melodic, score.track_count, _instruments(score), drums, score.duration_seconds, repairs)
    report = replace(report, error=_why_unusable(score, vocabulary))
    data = source if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    return score, report, hashlib.sha256(data).hexdigest()


def _instruments(score: Score) -> tuple[str, ...]:
    """General MIDI families of the melodic notes, in program order, each once."""
    families = sorted({note.program // 8 for note in score.melodic_notes})
    return tuple(INSTRUMENT_FAMILIES[family] for family in families)


def _count(number: int, noun: str) -> str:
    """'1 note', '2 notes', '1,024 notes'."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _fingerprint(digests: Iterable[str]) -> str:
    """sha256 hex over the sorted content digests, so order and names do not matter."""
    return hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()
