"""How much of a generated piece is borrowed from the training music.

Both measures read the melodic notes (drums are left out) in the order (start, pitch), with
times snapped to the beat grid as the tokens do (a note lasts at least one grid step). Each
note after the first is described relative to the one before it: the pitch interval in
semitones, the onset gap in grid steps (0 inside a chord), and the durations of both notes
in grid steps. `k` notes in a row count as copied when some training piece has `k` notes in
a row with the same descriptions: same durations, same intervals, same onset gaps. So a
passage moved to another key still counts as copied; one played slower, or with one note
changed, does not. Loudness and instrument are ignored. A single note on its own is never
counted as borrowed: the shortest copied passage is two notes.

The corpus is indexed once (`index_corpus`): every note step becomes one character of a
text, and a suffix array over that text finds, for each position of a new piece, the
longest passage starting there that also occurs in the corpus, by binary search.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, replace
from itertools import pairwise

import numpy as np

from musicgen.score import Score

# A borrowed passage of this many notes or more is flagged. Chorales share cadences: leaving
# each of 40 of music21's Bach chorales out in turn, its longest passage found in the others
# had a median of 15 notes (4 voices, so about 4 chords) and exceeded 30 only 3 times.
COPY_THRESHOLD_NOTES = 32
PHRASE_NOTES = 8  # length of the phrases counted by `copied_ngram_share`, in notes
SEPARATOR = "\x00"  # ends each corpus piece in the index text, so no match spans two pieces
UNSEEN = "\x01"  # a step of the new piece that no corpus piece has
FIRST_SYMBOL = 2  # character code of the first step kind seen in the corpus

Step = tuple[int, int, int, int]  # interval (semitones), onset gap, previous duration, duration (steps)


@dataclass(frozen=True, eq=False)
class CorpusIndex:
    """The note steps of every training piece, ready for fast lookup; made by `index_corpus`."""

    text: str  # one character per note step; each piece ends with SEPARATOR
    suffix_array: np.ndarray  # start of every suffix of `text`, in sorted order; shape (len(text),)
    symbols: dict[Step, str]  # the character of each step kind seen in the corpus
    piece_offsets: tuple[int, ...]  # where each piece begins in `text`
    step_beats: np.ndarray  # beat at which the first note of each step starts; NaN at separators
    steps_per_beat: int  # grid the corpus was snapped to

    @property
    def piece_count(self) -> int:
        """Number of corpus pieces."""
        return len(self.piece_offsets)


@dataclass(frozen=True)
class Originality:
    """How much of one piece is borrowed from the corpus; see the module docstring for the rules."""

    longest_copied_notes: int  # notes in the longest copied passage; 0 if no two notes in a row match
    copied_ngram_share: float  # share of the piece's PHRASE_NOTES-note phrases found in the corpus, 0..1
    phrase_count: int  # number of PHRASE_NOTES-note phrases in the piece (0 when it is shorter)
    note_count: int  # melodic notes in the piece
    longest_copy_beat: float | None = None  # where the longest copied passage starts in the piece
    longest_copy_source: int | None = None  # index of the corpus piece it was found in
    longest_copy_source_beat: float | None = None  # where it starts in that corpus piece

    @property
    def copies_long_passages(self) -> bool:
        """True when a passage of COPY_THRESHOLD_NOTES notes or more is copied from the corpus."""
        return self.longest_copied_notes >= COPY_THRESHOLD_NOTES

    def plain_summary(self) -> str:
        """The result in words for someone who does not program."""
        if self.longest_copied_notes == 0:
            borrowed = "Nothing is borrowed from the training music: not even two notes in a row occur there"
        else:
            notes = f"{self.longest_copied_notes} notes"
            borrowed = f"The longest passage borrowed from the training music: {notes}"
        if self.phrase_count == 0:
            phrases = f"the piece is too short to compare {PHRASE_NOTES}-note phrases"
        else:
            share = f"{self.copied_ngram_share:.0%}"
            phrases = f"{share} of its {PHRASE_NOTES}-note phrases also occur in the training music"
        warning = " That is long enough to sound like a copy." if self.copies_long_passages else ""
        return f"{borrowed}; {phrases}.{warning}"


def index_corpus(scores: Iterable[Score], steps_per_beat: int = 4) -> CorpusIndex:
    """Index the training pieces once, for any number of `measure_originality` calls."""
    if not isinstance(steps_per_beat, int) or not 1 <= steps_per_beat <= 48:
        raise ValueError(f"steps_per_beat must be in range 1..48, got {steps_per_beat!r}")
    symbols: dict[Step, str] = {}
    pieces, beats, offsets, length = [], [], [], 0
    for score in scores:
        steps, starts = score_to_steps(score, steps_per_beat)
        characters = [symbols.setdefault(step, chr(FIRST_SYMBOL + len(symbols))) for step in steps]
        pieces.append("".join(characters) + SEPARATOR)
        beats += [start / steps_per_beat for start in starts] + [np.nan]
        offsets.append(length)
        length += len(steps) + 1
    text = "".join(pieces)
    codes = np.fromiter(map(ord, text), np.int64, len(text))
    return CorpusIndex(text, suffix_array(codes), symbols, tuple(offsets), np.array(beats), steps_per_beat)


def save_index(index: CorpusIndex, path) -> None:
    """Write an index as plain arrays (.npz: no pickle), for `load_index`."""
    np.savez(
        path,
        codes=np.fromiter(map(ord, index.text), np.int32, len(index.text)),
        suffix_array=index.suffix_array,
        steps=np.array(list(index.symbols), np.int64).reshape(-1, 4),  # in the order of their characters
        piece_offsets=np.array(index.piece_offsets, np.int64),
        step_beats=index.step_beats,
        steps_per_beat=index.steps_per_beat,
    )


def load_index(path) -> CorpusIndex:
    """An index written by `save_index`."""
    with np.load(path, allow_pickle=False) as arrays:
        steps = [tuple(row) for row in arrays["steps"].tolist()]
        return CorpusIndex(
            "".join(map(chr, arrays["codes"].tolist())),
            arrays["suffix_array"],
            {step: chr(FIRST_SYMBOL + number) for number, step in enumerate(steps)},
            tuple(arrays["piece_offsets"].tolist()),
            arrays["step_beats"],
            int(arrays["steps_per_beat"]),
        )


def measure_originality(score: Score, index: CorpusIndex) -> Originality:
    """How much of `score` is copied from the corpus behind `index`."""
    steps, starts = score_to_steps(score, index.steps_per_beat)
    query = "".join(index.symbols.get(step, UNSEEN) for step in steps)
    matches = [longest_match(query[position:], index) for position in range(len(query))]
    lengths = [length for length, _ in matches]
    phrase_steps = PHRASE_NOTES - 1
    phrase_count = max(len(steps) - phrase_steps + 1, 0)
    copied_phrases = sum(length >= phrase_steps for length in lengths[:phrase_count])
    result = Originality(
        longest_copied_notes=0,
        copied_ngram_share=copied_phrases / phrase_count if phrase_count else 0.0,
        phrase_count=phrase_count,
        note_count=len(score.melodic_notes),
    )
    longest = max(lengths, default=0)
    if longest == 0:
        return result
    position = lengths.index(longest)
    corpus_position = matches[position][1]
    return replace(
        result,
        longest_copied_notes=longest + 1,  # a passage of k steps spans k + 1 notes
        longest_copy_beat=starts[position] / index.steps_per_beat,
        longest_copy_source=bisect.bisect_right(index.piece_offsets, corpus_position) - 1,
        longest_copy_source_beat=float(index.step_beats[corpus_position]),
    )


def score_to_steps(score: Score, steps_per_beat: int = 4) -> tuple[list[Step], list[int]]:
    """The note steps of a score (see the module docstring) and the grid step each one starts at."""
    notes = _grid_notes(score, steps_per_beat)
    steps = [
        (pitch - before_pitch, start - before_start, before_duration, duration)
        for (before_start, before_pitch, before_duration), (start, pitch, duration) in pairwise(notes)
    ]
    return steps, [start for start, _, _ in notes[:-1]]


def _grid_notes(score: Score, steps_per_beat: int) -> list[tuple[int, int, int]]:
    """(start, pitch, duration) of each melodic note in grid steps, sorted; snapped as the tokens do."""
    notes = []
    for note in score.melodic_notes:
        start = round(note.start * steps_per_beat)
        notes.append((start, note.pitch, max(round(note.end * steps_per_beat) - start, 1)))
    return sorted(notes)


def longest_match(query: str, index: CorpusIndex) -> tuple[int, int]:
    """Length of the longest start of `query` found in the corpus text, and where it is found there.

    The suffixes nearest to where `query` would sort share the longest start with it.
    """
    text, suffixes = index.text, index.suffix_array
    place = bisect.bisect_left(suffixes, query, key=lambda start: text[start : start + len(query)])
    best = (0, 0)
    for start in suffixes[max(place - 1, 0) : place + 1]:
        best = max(best, (_common_prefix_length(query, text[start : start + len(query)]), int(start)))
    return best


def _common_prefix_length(first: str, second: str) -> int:
    length = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        length += 1
    return length


def suffix_array(codes: np.ndarray) -> np.ndarray:
    """Start of every suffix of `codes` (non-negative ints), in sorted order.

    Prefix doubling: after each round, suffixes are ranked by their first `2 * width` codes;
    a suffix that runs out sorts before any longer one. O(n log^2 n), all in numpy.
    """
    rank, width = codes.astype(np.int64), 1
    while True:
        following = np.full(len(rank), -1, np.int64)
        following[: max(len(rank) - width, 0)] = rank[width:]
        order = np.lexsort((following, rank))
        rank_sorted, following_sorted = rank[order], following[order]
        is_new = np.ones(len(rank), bool)
        is_new[1:] = (rank_sorted[1:] != rank_sorted[:-1]) | (following_sorted[1:] != following_sorted[:-1])
        rank = np.empty(len(rank), np.int64)
        rank[order] = np.cumsum(is_new) - 1
        if is_new.all():
            return order
        width *= 2
