"""What the app does for each visitor, without Streamlit: composing pieces and measuring their originality.

- `load_composer` and `compose` turn a model and the page's settings into pieces;
  `MusicIndexes` builds the originality index of a model's training music in a child process.
- `plain_message` turns an error the visitor can act on into one sentence.
- Each visitor's folder, the limits and the clean-up are in `musicgen.workspace`; training in
  worker threads, and the queue that limits it, in `musicgen.jobs`.

TensorFlow is imported only when a model is loaded or trained, so the page can draw first.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from musicgen import memory, midi
from musicgen.corpus import load_folder
from musicgen.originality import CorpusIndex, index_corpus, load_index, save_index
from musicgen.score import Note, Score
from musicgen.tokens import decode
from musicgen.workspace import slug

GENERIC_ERROR = "Something went wrong on our side (the details are in the server log). Please try again."

log = logging.getLogger(__name__)


def sentence(text: str) -> str:
    """'the music is short' -> 'The music is short.'"""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def plain_message(error: BaseException) -> str | None:
    """The user-facing sentence of an error the user can act on; None for a bug (log it instead)."""
    plain_types = [midi.MidiError, ValueError]
    for module_name, class_name in (("musicgen.bundle", "BundleError"), ("musicgen.audio", "AudioError")):
        module = sys.modules.get(module_name)  # an error of a module never imported cannot happen
        if module is not None and hasattr(module, class_name):
            plain_types.append(getattr(module, class_name))
    return sentence(str(error)) if isinstance(error, tuple(plain_types)) and str(error) else None


# Composing.


class Foreground:
    """Counts pieces being made in this process; trainings pause between batches meanwhile.

    Two cores are shared: a training would otherwise slow a piece that takes half a second
    alone to several seconds. A batch takes a fraction of a second, so a piece waits at most
    that long, and a training pauses only while someone is waiting for music.
    """

    def __init__(self):
        self._busy = 0
        self._idle = threading.Condition()

    @contextmanager
    def making_music(self):
        """Hold while composing or rendering a piece someone is waiting for."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_until_idle(self, timeout: float) -> bool:
        """Block while a piece is being made, for at most `timeout` seconds; True if idle."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)


FOREGROUND = Foreground()  # the one of this process


@dataclass(frozen=True)
class Composer:
    """A loaded model, its sampler and its recommended temperatures; shared by every visitor."""

    bundle: object  # musicgen.bundle.Bundle
    sampler: object  # musicgen.sample.Sampler
    recommended_temperatures: tuple[float, float] | None = None
    # One piece at a time per model: a piece takes a tenth of a second, and two threads must
    # not compile the same sampler at once (that would only double the work on two cores).
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)


def load_composer(folder: Path) -> Composer:
    """Load a model folder with its sampler (call `warm_up` before the first piece is wanted)."""
    from musicgen.bundle import load_bundle
    from musicgen.evaluate import read_recommendation
    from musicgen.sample import Sampler

    bundle = load_bundle(folder)
    return Composer(bundle, Sampler(bundle.model, bundle.info.vocabulary), read_recommendation(folder))


def warm_up(composer: Composer) -> None:
    """Compile the sampler for one variation now (about 2 s), so that the first piece comes quickly."""
    from musicgen.sample import SampleConfig

    with composer.lock:
        composer.sampler.generate(SampleConfig(max_notes=1, max_seconds=1, variations=1))


_warmer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="musicgen-warm-up")


def warm_up_soon(composer: Composer) -> Future:
    """`warm_up` in a background thread (TensorFlow compiles without holding the interpreter lock)."""
    return _warmer.submit(warm_up, composer)


class Composers:
    """Loaded models shared by every visitor, held within a share of memory (musicgen.memory).

    Before a model loads, the least recently used others are dropped until its estimated size
    fits beside the rest; one too big for the whole share is refused. The built-in model is
    part of the process's own share: never dropped, never counted. A model loads once even
    when several visitors ask for it at the same moment.
    """

    def __init__(self, budget_bytes: int, built_in: Path):
        self.budget_bytes, self.built_in = budget_bytes, Path(built_in).resolve()
        self._lock = threading.Lock()
        self._held: OrderedDict[tuple[str, float], tuple[Composer, int]] = OrderedDict()  # oldest use first
        self._loading = threading.Lock()  # one load at a time: each makes room before it loads
        self._warm_ups: dict[tuple[str, float], Future] = {}

    def get(self, folder: Path, modified: float) -> Composer:
        """The composer of a model folder whose weights changed at `modified`, loaded if needed (BundleError,
        ValueError when it cannot be)."""
        key = (str(Path(folder).resolve()), modified)
        held = self._held_composer(key)
        if held is not None:
            return held
        with self._loading:
            held = self._held_composer(key)  # loaded by another visitor meanwhile
            if held is not None:
                return held
            cost = self._make_room_for(key)
            composer = load_composer(Path(folder))
            with self._lock:
                self._held[key] = (composer, cost)
            return composer

    def _held_composer(self, key: tuple[str, float]) -> Composer | None:
        """The composer held under this key, now the most recently used; None when it is not held."""
        with self._lock:
            if key not in self._held:
                return None
            self._held.move_to_end(key)
            return self._held[key][0]

    def warm_up(self, folder: Path, modified: float) -> Future:
        """Compile the model's sampler once, in the background (`warm_up_soon`)."""
        key = (str(Path(folder).resolve()), modified)
        composer = self.get(folder, modified)
        with self._lock:
            if key not in self._warm_ups:
                self._warm_ups[key] = warm_up_soon(composer)
            return self._warm_ups[key]

    def held_bytes(self) -> int:
        """Estimated memory of the models held, the built-in one left out."""
        with self._lock:
            return sum(cost for _, cost in self._held.values())

    def _make_room_for(self, key: tuple[str, float]) -> int:
        """Drop the least recently used models until this one fits; its estimated cost (0 for the built-in one)."""
        from musicgen.bundle import read_info

        if Path(key[0]) == self.built_in:
            return 0
        cost = memory.composer_bytes(read_info(Path(key[0]))[0].model_config)
        if cost > self.budget_bytes:
            raise ValueError(
                f"this model needs about {cost // memory.MEGABYTE} MB to compose, more than the "
                f"{self.budget_bytes // memory.MEGABYTE} MB this server keeps for visitors' models"
            )
        with self._lock:
            for old in list(self._held):
                if sum(held for _, held in self._held.values()) + cost <= self.budget_bytes:
                    break
                if self._held[old][1]:
                    del self._held[old]
                    self._warm_ups.pop(old, None)
        return cost


class Renderer:
    """Turns pieces into audio with FluidSynth, at most `at_once` at a time: each FluidSynth process holds
    the whole soundfont in memory (musicgen.memory.RENDER_MEGABYTES); the others wait their turn."""

    def __init__(self, at_once: int):
        self._slots = threading.BoundedSemaphore(at_once)

    def render(self, midi_bytes: bytes, sample_rate_hz: int) -> bytes:
        """The FLAC bytes of a MIDI file (musicgen.audio.render); trainings pause meanwhile."""
        from musicgen import audio

        with self._slots, FOREGROUND.making_music():
            return audio.render(midi_bytes, sample_rate_hz=sample_rate_hz)


@dataclass(frozen=True)
class Piece:
    """One generated piece, ready to show, play and download."""

    score: Score
    midi_bytes: bytes
    file_stem: str  # e.g. "musicgen-bach-seed1234" (a variation adds "-2", "-3"...)
    seed: int
    variation: int  # 1-based
    primer: tuple[Note, ...] = ()  # the notes that began in the primer (the model may have lengthened the last)


def compose(
    composer: Composer,
    config,
    model_name: str,
    program: int = 0,
    primer_score: Score | None = None,
    primer_notes: int = 16,
) -> list[Piece]:
    """Generate `config.variations` pieces (config: musicgen.sample.SampleConfig) as Pieces."""
    from musicgen.sample import primer_from_score

    vocabulary = composer.bundle.info.vocabulary
    primer = primer_from_score(primer_score, vocabulary, primer_notes) if primer_score is not None else None
    opening = {(note.start, note.pitch) for note in decode(primer, vocabulary).notes} if primer else set()
    pieces = []
    with FOREGROUND.making_music(), composer.lock:
        scores = composer.sampler.scores(config, primer, program)
    for number, score in enumerate(scores, 1):
        stem = piece_file_stem(model_name, config.seed, number, config.variations)
        primer_notes_found = tuple(_first_notes_at(score, opening))
        pieces.append(Piece(score, midi.write(score), stem, config.seed, number, primer_notes_found))
    return pieces


def _first_notes_at(score: Score, places: set[tuple[float, int]]) -> list[Note]:
    """The first note of the score at each (start, pitch); the model may lengthen the primer's last notes."""
    found, seen = [], set()
    for note in score.notes:
        if (note.start, note.pitch) in places and (note.start, note.pitch) not in seen:
            found.append(note)
            seen.add((note.start, note.pitch))
    return found


def piece_file_stem(model_name: str, seed: int, variation: int = 1, variations: int = 1) -> str:
    """'musicgen-bach-seed1234', with '-2', '-3'... for the later variations of a batch."""
    stem = f"musicgen-{slug(model_name) or 'model'}-seed{seed}"
    return stem if variations == 1 else f"{stem}-{variation}"


def new_seed() -> int:
    """A fresh random seed (not from the `random` module, which training reseeds)."""
    return secrets.randbelow(10_000)


def key_of_music(scores: Sequence[Score]) -> str | None:
    """The key name of some music taken together (such as 'G major'); None when it has no notes."""
    from musicgen.metrics import key_of

    notes = tuple(note for score in scores for note in score.melodic_notes)
    return key_of(Score(notes)).name if notes else None


@dataclass(frozen=True)
class MusicIndex:
    """The originality index of a folder of training music, with that music's fingerprint."""

    fingerprint: str
    index: CorpusIndex


class MusicIndexes:
    """Originality indexes of training-music folders, each built once, in a child process.

    Reading a few hundred MIDI files takes seconds of pure Python: in a thread it would hold
    the interpreter lock and slow every page of the process, so a fresh Python process does
    it (not multiprocessing, which would run the Streamlit script again in the child). The
    app starts the shipped model's index once the page is drawn and only waits for it if a
    piece is ready before the index is.
    """

    def __init__(self, keep: int = 8):
        self.keep = keep  # most indexes held; the oldest asked for is dropped first
        self._lock = threading.Lock()
        self._futures: dict[tuple[str, int], Future] = {}
        self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="musicgen-index")

    def start(self, folder: Path, steps_per_beat: int = 4) -> Future:
        """Start indexing a folder (if not done or under way already); a Future of its MusicIndex."""
        key = (str(Path(folder).resolve()), steps_per_beat)
        with self._lock:
            if key not in self._futures:
                self._futures[key] = self._waiter.submit(index_in_child_process, Path(key[0]), steps_per_beat)
                while len(self._futures) > self.keep:
                    del self._futures[next(iter(self._futures))]
            return self._futures[key]

    def get(self, folder: Path, steps_per_beat: int = 4, timeout: float | None = None) -> MusicIndex:
        """The index of a folder, waiting for it to be built; a failed build is tried again next time."""
        future = self.start(folder, steps_per_beat)
        try:
            return future.result(timeout)
        except Exception:
            with self._lock:
                self._futures = {key: value for key, value in self._futures.items() if value is not future}
            raise


def index_folder(folder: Path, steps_per_beat: int = 4) -> MusicIndex:
    """Read every MIDI file of a folder and index it for `musicgen.originality.measure_originality`."""
    music = load_folder(folder)
    return MusicIndex(music.fingerprint, index_corpus(music.scores, steps_per_beat))


def write_index_file(folder: str, steps_per_beat: str, out: str) -> None:
    """What the child process of `index_in_child_process` runs: the index as arrays into the folder `out`."""
    music = index_folder(Path(folder), int(steps_per_beat))
    save_index(music.index, Path(out) / "index.npz")
    (Path(out) / "fingerprint").write_text(music.fingerprint)


def index_in_child_process(folder: Path, steps_per_beat: int = 4, timeout: float = 600) -> MusicIndex:
    """`index_folder` run by a fresh Python process, its result passed back as plain arrays."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
    }
    with tempfile.TemporaryDirectory(prefix="musicgen-index-") as scratch:
        result = Path(scratch)
        # Lowest CPU priority: the index waits for idle time instead of slowing the pieces being composed.
        code = "import os, sys; os.nice(19); import musicgen.sessions as s; s.write_index_file(*sys.argv[1:])"
        command = [sys.executable, "-c", code, str(folder), str(steps_per_beat), str(result)]
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"indexing {folder} failed: {done.stderr.strip()[-2000:]}")
        return MusicIndex((result / "fingerprint").read_text(), load_index(result / "index.npz"))


@dataclass
class Results:
    """The pieces of the last Compose click, and what was worked out about them since."""

    pieces: Sequence[Piece]
    model_folder: Path  # the model that composed them
    corpus_fingerprint: str  # of the music that model learned from
    steps_per_beat: int  # of that model's tokens, which originality measures on
    seconds_asked: float  # the length asked for; a piece may end sooner
    audio: dict[int, Path] = field(default_factory=dict)  # variation -> its FLAC file in the workspace
    audio_errors: dict[int, str] = field(default_factory=dict)  # variation -> why it has no sound
    originality: dict[int, tuple[str, bool]] = field(default_factory=dict)  # variation -> (summary, copies)
    figures: dict[int, object] = field(default_factory=dict)  # variation -> plotly piano roll
