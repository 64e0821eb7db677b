"""Speed of `measure_originality` against a naive scan, for one piece of about a minute.

    python -m benchmarks.originality_speed           # a synthetic corpus of random pieces
    python -m benchmarks.originality_speed FOLDER    # the .mid/.midi files in FOLDER (any depth)

The piece is 500 random notes with a 20-note passage of a corpus piece planted in the
middle, transposed, so both methods must report a borrowed passage of at least 20 notes.
The naive scan compares every start position of the piece with every position of the
corpus, in plain Python, on the same note steps; it runs once, the indexed measure five
times (best run shown). Building the index is timed on its own.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from pathlib import Path

from musicgen.originality import index_corpus, measure_originality, score_to_steps
from musicgen.score import Note, Score

PLANTED_NOTES = 20  # length of the passage copied into the piece


def random_score(rng: random.Random, note_count: int) -> Score:
    """Chords of 1..4 random pitches on a 16th-note grid, one after the other."""
    notes: list[Note] = []
    step = 0
    while len(notes) < note_count:
        duration = rng.choice((1, 2, 2, 4, 4, 8))  # grid steps
        for pitch in rng.sample(range(48, 80), rng.randint(1, 4)):
            notes.append(Note(step / 4, pitch, (step + duration) / 4))
        step += duration
    return Score(tuple(notes[:note_count]))


def read_folder(folder: Path) -> list[Score]:
    """Every MIDI file in the folder that can be read; the others are reported and skipped."""
    from musicgen.midi import MidiError, read  # only this mode needs mido

    scores = []
    for path in sorted(folder.rglob("*.mid*")):
        try:
            scores.append(read(path))
        except MidiError as error:
            logging.warning("skipped %s: %s", path.name, error)
    return scores


def piece_with_copy(rng: random.Random, corpus: list[Score], note_count: int) -> Score:
    """Random notes with PLANTED_NOTES notes of a corpus piece, moved up 3 semitones, in the middle."""
    source = max(corpus, key=lambda score: len(score.melodic_notes)).melodic_notes
    first = rng.randrange(max(len(source) - PLANTED_NOTES, 1))
    planted = source[first : first + PLANTED_NOTES]
    before = random_score(rng, (note_count - PLANTED_NOTES) // 2).notes
    after = random_score(rng, note_count - PLANTED_NOTES - len(before)).notes
    gap = max(note.end for note in before) + 1 - planted[0].start
    moved = [Note(n.start + gap, min(n.pitch + 3, 127), n.end + gap) for n in planted]
    later = max(note.end for note in moved) + 1
    return Score((*before, *moved, *(Note(n.start + later, n.pitch, n.end + later) for n in after)))


def naive_longest_copied_notes(piece: Score, corpus: list[Score]) -> int:
    """Longest copied passage by comparing every piece position with every corpus position."""
    piece_steps = score_to_steps(piece)[0]
    corpus_steps = [score_to_steps(score)[0] for score in corpus]
    longest = 0
    for start in range(len(piece_steps)):
        for steps in corpus_steps:
            for position in range(len(steps)):
                length = 0
                while (
                    start + length < len(piece_steps)
                    and position + length < len(steps)
                    and piece_steps[start + length] == steps[position + length]
                ):
                    length += 1
                longest = max(longest, length)
    return longest + 1 if longest else 0


def milliseconds_of(function, repeats: int = 1) -> tuple[float, object]:
    """Best time of `repeats` calls, in ms, and the result of the last call."""
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        result = function()
        best = min(best, (time.perf_counter() - begin) * 1000)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of MIDI files (default: random pieces)")
    parser.add_argument("--pieces", type=int, default=350, help="synthetic corpus: number of pieces")
    parser.add_argument("--notes-per-piece", type=int, default=230, help="synthetic corpus: notes per piece")
    parser.add_argument("--piece-notes", type=int, default=500, help="notes in the measured piece")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    if arguments.folder:
        corpus = read_folder(arguments.folder)
    else:
        corpus = [random_score(rng, arguments.notes_per_piece) for _ in range(arguments.pieces)]
    if not any(len(score.melodic_notes) > PLANTED_NOTES for score in corpus):
        raise SystemExit(f"the corpus needs a piece with more than {PLANTED_NOTES} melodic notes")
    piece = piece_with_copy(rng, corpus, arguments.piece_notes)
    note_total = sum(len(score.melodic_notes) for score in corpus)
    print(f"corpus: {len(corpus)} pieces, {note_total:,} notes; piece: {len(piece.notes)} notes")

    index_ms, index = milliseconds_of(lambda: index_corpus(corpus))
    indexed_ms, result = milliseconds_of(lambda: measure_originality(piece, index), repeats=5)
    print(f"index built in {index_ms:,.0f} ms; {result.plain_summary()}")
    naive_ms, naive_longest = milliseconds_of(lambda: naive_longest_copied_notes(piece, corpus))
    if naive_longest != result.longest_copied_notes:
        raise SystemExit(f"results differ: indexed {result.longest_copied_notes}, naive {naive_longest}")
    print(f"both find a longest copied passage of {naive_longest} notes")
    print(f"indexed {indexed_ms:,.0f} ms, naive {naive_ms:,.0f} ms: {naive_ms / indexed_ms:,.0f}x faster")


if __name__ == "__main__":
    main()
