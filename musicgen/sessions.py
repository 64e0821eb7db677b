"""What the app does for each visitor, without Streamlit: composing pieces and measuring their originality.

- `load_composer` and `compose` turn a model and the page's settings into pieces;
  `MusicIndexes` builds the originality index of a model's training music in a child process.
- `plain_message` turns an error the visitor can act on into one sentence.
- Each visitor's folder, the limits and the clean-up are in `musicgen.workspace`; training in
  worker threads, and the queue that limits it, in `musicgen.jobs`.

TensorFlow is imported only when a model is trained: composing runs on NumPy (musicgen.sample).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict, deque
from collections.abc import Collection, Sequence
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


class SamplingQueue:
    """Requests for one model's pieces, sampled together (musicgen.sample.Batch).

    One thread steps the batch while there is work. A request joins it at the next step, as long
    as its rows fit (sample.MAX_ROWS), and is answered as soon as its own pieces end: a crowd is
    served together instead of one after another, and a short piece waits for nobody's long one.
    """

    def __init__(self, sampler):
        self.sampler = sampler  # musicgen.sample.Sampler
        self._lock = threading.Lock()
        self._waiting: deque[tuple[object, Future]] = deque()  # (musicgen.sample.Request, its answer)
        self._stepping = False
        self.largest_batch = 0  # most rows stepped together so far

    def generate(self, config, primer: list[int] | None = None) -> list[list[int]]:
        """Token ids of the pieces of one request (musicgen.sample.Sampler.generate), sampled with whatever else
        is asked for meanwhile."""
        answer = Future()
        with self._lock:
            self._waiting.append((self.sampler.request(config, primer), answer))
            if not self._stepping:
                self._stepping = True
                threading.Thread(target=self._step_while_busy, name="musicgen-sampler", daemon=True).start()
        return answer.result()

    def _step_while_busy(self) -> None:
        from musicgen.sample import Batch

        batch, answers = Batch(self.sampler), {}
        while self._take_waiting(batch, answers):
            try:
                finished = batch.step()
            except Exception as error:  # a bug: everyone in the batch hears of it, and the next batch starts clean
                log.exception("sampling failed")
                for answer in answers.values():
                    answer.set_exception(error)
                batch, answers = Batch(self.sampler), {}
                continue
            for request in finished:
                answers.pop(request).set_result(request.results())

    def _take_waiting(self, batch, answers: dict) -> bool:
        """Move waiting requests that fit into the batch; False (and the thread ends) when there is nothing to do."""
        with self._lock:
            while self._waiting and self._waiting[0][0].config.variations <= batch.room():
                request, answer = self._waiting.popleft()
                if len(batch):
                    log.info("%d pieces join %d being sampled", request.config.variations, len(batch))
                answers[batch.add(request)] = answer
            self.largest_batch = max(self.largest_batch, len(batch))
            self._stepping = len(batch) > 0
            return self._stepping


@dataclass(frozen=True)
class Composer:
    """A loaded model, its sampling queue and its recommended temperatures; shared by every visitor."""

    folder: Path
    info: object  # musicgen.bundle.BundleInfo
    queue: SamplingQueue
    recommended_temperatures: tuple[float, float] | None = None


def load_composer(folder: Path) -> Composer:
    """Load a model folder for composing: its weights as arrays, no TensorFlow and nothing to compile."""
    from musicgen.bundle import load_weight_arrays, read_recommendation
    from musicgen.sample import Sampler

    info, arrays = load_weight_arrays(folder)
    queue = SamplingQueue(Sampler(arrays, info.vocabulary, info.openings))
    return Composer(Path(folder), info, queue, read_recommendation(folder))


class Composers:
    """Loaded models shared by every visitor, held within a share of memory (musicgen.memory).

    Before a model loads, the least recently used others are dropped until its estimated size
    fits beside the rest; one too big for the whole share is refused. The built-in model is
    part of the process's own share: never dropped, never counted. A model loads once even
    when several visitors ask for it at the same moment.
    """

    def __init__(self, budget_bytes: int, built_in: Collection[Path]):
        self.budget_bytes, self.built_in = budget_bytes, {Path(folder).resolve() for folder in built_in}
        self._lock = threading.Lock()
        self._held: OrderedDict[tuple[str, float], tuple[Composer, int]] = OrderedDict()  # oldest use first
        self._loading = threading.Lock()  # one load at a time: each makes room before it loads

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

    def held_bytes(self) -> int:
        """Estimated memory of the models held, the built-in one left out."""
        with self._lock:
            return sum(cost for _, cost in self._held.values())

    def _make_room_for(self, key: tuple[str, float]) -> int:
        """Drop the least recently used models until this one fits; its estimated cost (0 for the built-in one)."""
        from musicgen.bundle import read_info

        if Path(key[0]) in self.built_in:
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
        return cost


class Renderer:
    """Turns pieces into audio with FluidSynth and LAME in child processes, `at_once` pieces at a time (each
    FluidSynth holds the soundfont in memory: musicgen.memory.RENDER_MEGABYTES).

    Waiting pieces go by their number in their own request, then by arrival: everyone's first piece
    before anyone's second, so a visitor who asks for many pieces delays the others by one render at most.
    """

    def __init__(self, at_once: int):
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, bytes, Future]] = []  # heap of (variation, arrival, MIDI bytes, answer)
        self._arrivals = itertools.count()
        self._workers = ThreadPoolExecutor(max_workers=at_once, thread_name_prefix="musicgen-render")

    def submit(self, midi_bytes: bytes, variation: int = 1) -> Future:
        """A Future of the MP3 bytes of a MIDI file (musicgen.audio.render); trainings pause meanwhile."""
        answer = Future()
        with self._lock:
            heapq.heappush(self._waiting, (variation, next(self._arrivals), midi_bytes, answer))
        self._workers.submit(self._render_next)
        return answer

    def _render_next(self) -> None:
        from musicgen import audio

        with self._lock:
            *_, midi_bytes, answer = heapq.heappop(self._waiting)
        try:
            with FOREGROUND.making_music():
                answer.set_result(audio.render(midi_bytes))
        except Exception as error:  # noqa: BLE001 - passed on to whoever waits for this piece
            answer.set_exception(error)


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
    program: int | None = None,
    primer_score: Score | None = None,
    primer_notes: int = 16,
    fresh_start: bool = False,
) -> list[Piece]:
    """Generate `config.variations` pieces (config: musicgen.sample.SampleConfig) as Pieces. Without a primer score
    they start from the model's openings of the music it learned (if any), or from nothing with `fresh_start`."""
    from musicgen.sample import primer_from_score

    vocabulary, sampler = composer.info.vocabulary, composer.queue.sampler
    primer = [] if fresh_start else None
    if primer_score is not None:
        primer = primer_from_score(primer_score, vocabulary, primer_notes)
    with FOREGROUND.making_music():
        ids = composer.queue.generate(config, primer)
    pieces = []
    scores = sampler.pieces_to_scores(config, ids, program)
    for number, (score, opening) in enumerate(zip(scores, sampler.primers(config, primer), strict=True), 1):
        stem = piece_file_stem(model_name, config.seed, number, config.variations)
        opening_notes = {(note.start, note.pitch) for note in decode(opening, vocabulary).notes}
        primer_notes_found = tuple(_first_notes_at(score, opening_notes))
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
    renders: dict[int, Future] = field(default_factory=dict)  # variation -> its MP3 bytes, once rendered
    audio: dict[int, Path] = field(default_factory=dict)  # variation -> its MP3 file in the workspace
    audio_errors: dict[int, str] = field(default_factory=dict)  # variation -> why it has no sound
    originality: dict[int, tuple[str, bool]] = field(default_factory=dict)  # variation -> (summary, copies)
    figures: dict[int, str] = field(default_factory=dict)  # variation -> piano roll (musicgen.plots.piano_roll)
