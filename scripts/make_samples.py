"""Build the bundled MIDI files from music21's corpus: Bach chorales to train on, a few demo pieces, and
the music of the built-in styles (samples/styles/NAME/).

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

# The built-in styles besides the chorales (samples/bach): folder name -> what makes it. See samples/README.md
# for each collection's origin and licence.
MADRIGAL_BOOKS = ("3", "4", "5")  # Monteverdi's madrigal books of 1592, 1603 and 1605, for five voices
MADRIGAL_BPM = 120  # quarter notes a minute: the tactus on the minim at 60
FIDDLE_TUNE_BPM = 110
QUARTET_BPM = 100
FIDDLE_TUNE_EVERY = 2  # every other tune of Ryan's Mammoth Collection: about 530
ONEILLS_BOOKS = ("oneills1850/0001-0050.abc", "oneills1850/0051-0100.abc", "oneills1850/0101-0200.abc")
STRING_PROGRAMS = {"violin": 40, "viola": 41, "cello": 42, "violoncello": 42}  # General MIDI, counted from 0
CHOIR_PROGRAM = 52  # choir "aahs"
VIOLIN_PROGRAM = 40

log = logging.getLogger("make_samples")


def main() -> None:
    """Write samples/bach/ and samples/demo/ afresh."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    corpus = _import_music21_corpus()
    chorales = {f"{name.removeprefix('bach/')}.mid": (name, CHORALE_BPM) for name in chorale_names()}
    write_folder(SAMPLES / "bach", convert_all(corpus, chorales))
    write_folder(SAMPLES / "demo", convert_all(corpus, DEMO_CHORALES | DEMO_FOLK_TUNES))
    write_folder(SAMPLES / "styles" / "madrigals", convert_all(corpus, madrigal_names(corpus), _sung))
    write_folder(SAMPLES / "styles" / "fiddle-tunes", fiddle_tunes(corpus))
    write_folder(SAMPLES / "styles" / "string-quartets", convert_all(corpus, quartet_names(corpus), _bowed))


def _corpus_names(corpus, composer: str, suffix: str) -> list[str]:
    """Corpus names of a composer's files ending in `suffix`, in path order."""
    paths = sorted(str(path).split("/corpus/", 1)[1] for path in corpus.getComposer(composer))
    return [path for path in paths if path.endswith(suffix)]


def madrigal_names(corpus) -> dict[str, tuple[str, int]]:
    """Monteverdi's madrigals of books 3 to 5, by file name."""
    names = [name for name in _corpus_names(corpus, "monteverdi", ".mxl") if name.split(".")[1] in MADRIGAL_BOOKS]
    return {f"{name.removeprefix('monteverdi/').removesuffix('.mxl')}.mid": (name, MADRIGAL_BPM) for name in names}


def quartet_names(corpus) -> dict[str, tuple[str, int]]:
    """The string quartets of Haydn, Mozart and Beethoven in the corpus (each movement once), by file name."""
    names = [name for composer in ("haydn", "mozart", "beethoven") for name in _corpus_names(corpus, composer, ".mxl")]
    names = [name for name in names if "movement" in name and "k545" not in name]  # not a piano sonata; whole
    # quartets in one file (Beethoven's op. 18 nos. 3-5, 74, 132, 133) are left out: music21 takes many minutes on each
    return {f"{name.removesuffix('.mxl').replace('/', '_')}.mid": (name, QUARTET_BPM) for name in names}


def fiddle_tunes(corpus) -> dict[str, bytes]:
    """Every other tune of Ryan's Mammoth Collection and the first 200 of O'Neill's 1850, on the violin."""
    from music21.exceptions21 import Music21Exception

    ryans = _corpus_names(corpus, "ryansMammoth", ".abc")[::FIDDLE_TUNE_EVERY]
    tunes = convert_all(corpus, {f"ryans_{Path(name).stem}.mid": (name, FIDDLE_TUNE_BPM) for name in ryans}, _fiddled)
    for book in ONEILLS_BOOKS:
        for number in range(1, len(corpus.parse(book).scores) + 1):
            name = f"oneills_{Path(book).stem}_{number:03}.mid"
            try:  # a tune parsed on its own: music21 cannot export some tunes of a whole book
                tunes[name] = to_midi(corpus.parse(book, number=number), FIDDLE_TUNE_BPM, _fiddled)
            except Music21Exception as error:
                log.warning("left out %s: music21 cannot convert it (%s)", name, error)
    return tunes


def _sung(score) -> None:
    set_programs(score, lambda part_name: CHOIR_PROGRAM)


def _fiddled(score) -> None:
    set_programs(score, lambda part_name: VIOLIN_PROGRAM)


def _bowed(score) -> None:
    """Violins, viola and cello by their part names (the files name them but give every part program 0)."""
    set_programs(score, lambda name: next((p for word, p in STRING_PROGRAMS.items() if word in name.lower()), 40))


def set_programs(score, program_of_part) -> None:
    """Give each part of a music21 score the General MIDI program `program_of_part(its name)`."""
    from music21 import instrument, stream

    for part in score.getElementsByClass(stream.Part) or [score]:
        for old in part.recurse().getElementsByClass(instrument.Instrument):
            old.activeSite.remove(old)
        player = instrument.Instrument()
        player.midiProgram = program_of_part(part.partName or "")
        part.insert(0, player)


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


def convert_all(corpus, pieces: dict[str, tuple[str, int]], arrange=None) -> dict[str, bytes]:
    """MIDI bytes of each piece that music21 can convert, by file name; `arrange` may set its instruments first."""
    from music21.exceptions21 import Music21Exception

    converted = {}
    for file_name, (corpus_name, bpm) in pieces.items():
        try:
            converted[file_name] = to_midi(corpus.parse(corpus_name), bpm, arrange)
        except Music21Exception as error:
            if "repeat" not in str(error):
                log.warning("left out %s: music21 cannot convert it (%s)", file_name, error)
                continue
            log.info("%s: played without its repeats (music21 cannot play them out: %s)", file_name, error)
            converted[file_name] = to_midi(_without_repeats(corpus.parse(corpus_name)), bpm, arrange)
    return converted


def _without_repeats(score):
    """The score with its repeat signs, brackets and instructions taken out: each bar played once."""
    from music21 import bar, repeat, spanner

    for kind in (repeat.RepeatExpression, repeat.RepeatMark, spanner.RepeatBracket):
        for element in list(score.recurse().getElementsByClass(kind)):
            element.activeSite.remove(element)
    for sign in list(score.recurse().getElementsByClass(bar.Repeat)):
        measure = sign.activeSite
        measure.leftBarline = None if measure.leftBarline is sign else measure.leftBarline
        measure.rightBarline = None if measure.rightBarline is sign else measure.rightBarline
    return score


def to_midi(score, bpm: int, arrange=None) -> bytes:
    """A music21 score as MIDI bytes at `bpm` quarter notes per minute, repeats played out."""
    from music21 import tempo

    if arrange is not None:
        arrange(score)
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
