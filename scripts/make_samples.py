"""Build the bundled MIDI files from music21's corpus: Bach chorales to train on, a few demo pieces.

Run from the repository root: `.venv/bin/python scripts/make_samples.py`. It needs music21, a
development dependency (`.venv/bin/pip install -r requirements-dev.txt`). Every file is read
back with `musicgen.midi.read` and left out if that fails. A rerun writes the same bytes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY))  # run as a file, not installed: make `musicgen` importable

from musicgen import midi  # noqa: E402

SAMPLES = REPOSITORY / "samples"
CHORALE_BPM = 90  # the chorales carry no tempo, and MIDI's default of 120 rushes them
DEMO_CHORALES = {  # file name -> music21 corpus name, quarter notes per minute
    "chorale_bwv269_aus_meines_herzens_grunde.mid": ("bach/bwv269", CHORALE_BPM),
    "chorale_bwv244.62_o_haupt_voll_blut_und_wunden.mid": ("bach/bwv244.62", CHORALE_BPM),
    "chorale_bwv302_ein_feste_burg.mid": ("bach/bwv302", CHORALE_BPM),
}
DEMO_FOLK_TUNES = {
    "folk_haste_to_the_wedding.mid": ("ryansMammoth/HasteToTheWeddingJig", 150),  # 6/8 jig
    "folk_arkansas_traveller.mid": ("ryansMammoth/ArkansasTravellerReel", 100),  # 2/4 reel in 16ths
}

log = logging.getLogger("make_samples")


def main() -> None:
    """Write samples/bach/ and samples/demo/ afresh."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    corpus = _import_music21_corpus()
    chorales = {f"{name.removeprefix('bach/')}.mid": (name, CHORALE_BPM) for name in chorale_names()}
    write_folder(SAMPLES / "bach", convert_all(corpus, chorales))
    write_folder(SAMPLES / "demo", convert_all(corpus, DEMO_CHORALES | DEMO_FOLK_TUNES))


def _import_music21_corpus():
    try:
        from music21 import corpus
    except ImportError:
        sys.exit("make_samples needs music21: run .venv/bin/pip install -r requirements-dev.txt")
    return corpus


def chorale_names() -> list[str]:
    """Corpus names of the 371 Riemenschneider chorales, each harmonisation once, in catalogue order."""
    from music21.corpus import chorales

    return list(dict.fromkeys(chorales.Iterator(returnType="filename")))


def convert_all(corpus, pieces: dict[str, tuple[str, int]]) -> dict[str, bytes]:
    """MIDI bytes of each piece that music21 can convert, by file name."""
    from music21.exceptions21 import Music21Exception

    converted = {}
    for file_name, (corpus_name, bpm) in pieces.items():
        try:
            converted[file_name] = piece_to_midi(corpus, corpus_name, bpm)
        except Music21Exception as error:
            log.warning("left out %s: music21 cannot convert it (%s)", file_name, error)
    return converted


def piece_to_midi(corpus, name: str, bpm: int) -> bytes:
    """A corpus piece as MIDI bytes at `bpm` quarter notes per minute, repeats played out."""
    from music21 import tempo

    score = corpus.parse(name)
    score.insert(0, tempo.MetronomeMark(number=bpm))
    return stream_to_midi(score)  # music21's exporter plays the repeats out itself


def stream_to_midi(stream) -> bytes:
    """MIDI file bytes from music21's own exporter."""
    from music21 import midi as music21_midi

    return music21_midi.translate.streamToMidiFile(stream).writestr()


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Replace the .mid files in `folder` with those of `files` that musicgen reads, each music once."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.mid"):
        old.unlink()
    kept: dict[bytes, str] = {}  # file bytes -> name: two corpus entries can give the same music
    for name, data in files.items():
        if data in kept:
            log.warning("left out %s: the same music as %s", name, kept[data])
        elif _readable(name, data):
            kept[data] = name
            (folder / name).write_bytes(data)
    size_kb = sum(map(len, kept)) / 1000
    log.info("%s: %d files, %.0f kB", folder.relative_to(REPOSITORY), len(kept), size_kb)


def _readable(name: str, data: bytes) -> bool:
    try:
        score = midi.read(data)
    except midi.MidiError as error:
        log.warning("left out %s: %s", name, error)
        return False
    if not score.melodic_notes:
        log.warning("left out %s: no notes", name)
    return bool(score.melodic_notes)


if __name__ == "__main__":
    main()
