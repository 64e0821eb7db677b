"""The held-out style of the fine-tuning benchmark: Scottish airs from James Aird's six books (Glasgow, 1778-1803).

music21's corpus holds them as ABC (`airdsAirs`, transcribed by Jack Campin): 1,180 tunes, one melody line
each, marches, reels, strathspeys and slow airs. They are converted at run time, each tune on its own, to MIDI
on the flute (General MIDI program 73: the books are "adapted to the Fife, Violin, or German Flute"), and
cached in RUNS/airs; nothing of them is committed. No built-in style holds them: the nearest is the fiddle
tunes (Ryan's and O'Neill's, on the violin), and tunes travel between collections, so a tune any of whose
passages of COPY_THRESHOLD_NOTES notes or more is found in the built-in music (samples/) is left out, as is a
test tune that shares such a passage with a training tune.

Training files are drawn (seeded) from books 1-5, the test files are book 6 in order; `split_airs(tuning=True)`
draws from books 1-4 and tests on book 5, so that settings are chosen without touching book 6.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicgen import midi
from musicgen.corpus import load_folder
from musicgen.originality import COPY_THRESHOLD_NOTES, CorpusIndex, index_corpus, measure_originality
from musicgen.score import Score

REPOSITORY = Path(__file__).resolve().parent.parent
BOOK_FILE = "airdsAirs/book{}.abc"
FIRST_TUNE = {1: 1, 2: 201, 3: 401, 4: 601, 5: 801, 6: 1001}  # ABC X: number of each book's first tune
TUNES = {1: 200, 2: 200, 3: 200, 4: 200, 5: 200, 6: 180}
FLUTE = 73  # General MIDI program, counted from 0
BPM = 100  # quarter notes a minute (tokens count beats, so the tempo changes nothing the model learns)
BUILT_IN_MUSIC = ("samples/bach", "samples/styles")  # what a tune must not share a long passage with

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AirSplit:
    """MIDI files of the airs a benchmark trains on and tests on; no tune is in both."""

    training: tuple[Path, ...]  # in draw order: the first n are the n-file training set
    test: tuple[Path, ...]  # in book order


def split_airs(
    cache: Path,
    training_count: int = 20,
    test_count: int = 40,
    seed: int = 0,
    tuning: bool = False,
    other_music: Sequence[Score] | None = None,
) -> AirSplit:
    """Draw `training_count` airs from the training books and take `test_count` of the test book, leaving out tunes
    that share a long passage with `other_music` (default: the built-in music)."""
    training_books, test_book = ((1, 2, 3, 4), 5) if tuning else ((1, 2, 3, 4, 5), 6)
    built_in = index_corpus(built_in_scores() if other_music is None else other_music)
    pool = np.random.default_rng(seed).permutation([n for b in training_books for n in tune_numbers(b)])
    training = usable_airs(pool, cache, training_count, [built_in])
    trained_on = index_corpus(midi.read(path) for path in training)
    test = usable_airs(tune_numbers(test_book), cache, test_count, [built_in, trained_on])
    return AirSplit(tuple(training), tuple(test))


def tune_numbers(book: int) -> list[int]:
    """The ABC X: numbers of a book's tunes."""
    return list(range(FIRST_TUNE[book], FIRST_TUNE[book] + TUNES[book]))


def built_in_scores() -> list[Score]:
    """Every piece of the built-in styles' music."""
    return [score for folder in BUILT_IN_MUSIC for score in load_folder(REPOSITORY / folder).scores]


def usable_airs(numbers: Iterable[int], cache: Path, count: int, avoid: Sequence[CorpusIndex]) -> list[Path]:
    """The files of the first `count` tunes that convert and share no long passage with the `avoid` indexes."""
    found = []
    for number in numbers:
        path = air_file(int(number), cache)
        if path is not None and not shares_a_long_passage(midi.read(path), avoid, path.name):
            found.append(path)
            if len(found) == count:
                return found
    raise ValueError(f"only {len(found)} of the {count} airs asked for can be used")


def shares_a_long_passage(score: Score, indexes: Sequence[CorpusIndex], name: str = "") -> bool:
    """True when COPY_THRESHOLD_NOTES or more notes in a row of the score occur in any of the indexed corpora."""
    longest = max(measure_originality(score, index).longest_copied_notes for index in indexes)
    if longest >= COPY_THRESHOLD_NOTES:
        log.info("left out %s: %d notes in a row are in other music", name, longest)
    return longest >= COPY_THRESHOLD_NOTES


def air_file(number: int, cache: Path) -> Path | None:
    """The MIDI file of tune `number`, converted now unless cached; None when music21 cannot convert it."""
    path = Path(cache) / f"aird_{number:04}.mid"
    if not path.exists():
        data = convert_air(number)
        if data is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def convert_air(number: int) -> bytes | None:
    """MIDI bytes of one tune, on the flute, its repeats played out; None when music21 or musicgen cannot read it."""
    from music21 import corpus
    from music21.exceptions21 import Music21Exception

    from scripts.make_samples import to_midi

    book = next(book for book, first in FIRST_TUNE.items() if first <= number < first + TUNES[book])
    try:
        data = to_midi(corpus.parse(BOOK_FILE.format(book), number=number), BPM, flute)
        midi.read(data)
    except (Music21Exception, midi.MidiError) as error:
        log.warning("left out air %d: it cannot be converted (%s)", number, error)
        return None
    return data


def flute(score) -> None:
    """Every part of a music21 score on the flute."""
    from scripts.make_samples import set_programs

    set_programs(score, lambda part_name: FLUTE)
