"""What the app does for each visitor, without Streamlit: workspaces, limits, model names, composing.

- A `Workspace` is one browser session's own folder under the runs root (env
  MUSICGEN_RUNS, else a folder in the temp directory): its trainings (`runs/`), the models
  it opened from zip files (`models/`), the music each of its models learned from
  (`corpora/`) and the audio of the pieces on show (`pieces/`). The shipped model is only
  ever read; training "further" from it writes a new run into the workspace. A workspace
  is capped in size, and folders of sessions unused for a day (or over a total cap, least
  recently used first) are removed.
- `load_composer` and `compose` turn a model and the page's settings into pieces;
  `MusicIndexes` builds the originality index of a model's training music in a child process.
- Training in worker threads, and the queue that limits it, are in `musicgen.jobs`.

TensorFlow is imported only when a model is loaded or trained, so the page can draw first.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from musicgen import midi
from musicgen.corpus import Corpus, load_folder
from musicgen.originality import CorpusIndex, index_corpus, load_index, save_index
from musicgen.score import Note, Score
from musicgen.tokens import decode
from musicgen.validation import check_ranges

RUNS_ENV = "MUSICGEN_RUNS"  # folder that holds one folder per session
ALIVE_FILE = ".alive"  # touched on every visit; its time says when a workspace was last used
WEIGHTS_FILE = "model.weights.h5"
GENERIC_ERROR = "Something went wrong on our side (the details are in the server log). Please try again."

log = logging.getLogger(__name__)


# Limits.


@dataclass(frozen=True)
class Limits:
    """Resource limits of one app process; `from_environment` reads them from MUSICGEN_* variables."""

    max_trainings: int = 1  # trainings running at once in the process, 1..16 (each takes about 1 GB)
    session_megabytes: int = 300  # disk one session may fill, 10..100000 MB
    total_megabytes: int = 5000  # disk all sessions may fill before the least recently used go, 10..10**6 MB
    max_age_hours: float = 24.0  # a session folder unused this long is removed, 0.01..10000 hours
    abandon_seconds: float = 600.0  # a training nobody looked at this long stops, 10..86400 s

    def __post_init__(self) -> None:
        check_ranges(
            self,
            max_trainings=(1, 16),
            session_megabytes=(10, 100_000),
            total_megabytes=(10, 1_000_000),
            max_age_hours=(0.01, 10_000.0),
            abandon_seconds=(10.0, 86_400.0),
        )

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Limits:
        """Limits from MUSICGEN_MAX_TRAININGS, MUSICGEN_SESSION_MB, MUSICGEN_TOTAL_MB,
        MUSICGEN_MAX_AGE_HOURS and MUSICGEN_ABANDON_SECONDS; defaults for those not set."""
        environ = os.environ if environ is None else environ
        names = {
            "max_trainings": ("MUSICGEN_MAX_TRAININGS", int),
            "session_megabytes": ("MUSICGEN_SESSION_MB", int),
            "total_megabytes": ("MUSICGEN_TOTAL_MB", int),
            "max_age_hours": ("MUSICGEN_MAX_AGE_HOURS", float),
            "abandon_seconds": ("MUSICGEN_ABANDON_SECONDS", float),
        }
        settings = {}
        for name, (variable, kind) in names.items():
            if environ.get(variable):
                try:
                    settings[name] = kind(environ[variable])
                except ValueError:
                    raise ValueError(f"{variable} must be a number, got {environ[variable]!r}") from None
        return cls(**settings)


def runs_root(environ: dict[str, str] | None = None) -> Path:
    """The folder that holds every session's workspace: $MUSICGEN_RUNS, else one in the temp directory."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(RUNS_ENV) or Path(tempfile.gettempdir()) / "musicgen-sessions")


# Workspaces.


@dataclass(frozen=True)
class Workspace:
    """One session's folder: runs/ (trainings), models/ (opened zip files), corpora/ (training music)."""

    folder: Path

    @classmethod
    def create(cls, root: Path) -> Workspace:
        """A new, empty workspace with a random name under `root`."""
        workspace = cls(Path(root) / secrets.token_hex(8))
        workspace.folder.mkdir(parents=True)
        workspace.touch()
        return workspace

    @property
    def session_id(self) -> str:
        """The random name of the folder."""
        return self.folder.name

    @property
    def runs(self) -> Path:
        return self.folder / "runs"

    @property
    def models(self) -> Path:
        return self.folder / "models"

    @property
    def corpora(self) -> Path:
        return self.folder / "corpora"

    @property
    def pieces(self) -> Path:
        """Audio of the pieces on show, kept on disk rather than in memory (many visitors share one process)."""
        return self.folder / "pieces"

    def keep_audio(self, file_stem: str, flac: bytes) -> Path:
        """Store a piece's audio; the path to play and download it from."""
        self.pieces.mkdir(parents=True, exist_ok=True)
        path = self.pieces / f"{slug(file_stem) or 'piece'}.flac"
        path.write_bytes(flac)
        return path

    def forget_pieces(self) -> None:
        """Remove the audio of earlier pieces."""
        shutil.rmtree(self.pieces, ignore_errors=True)

    def touch(self) -> None:
        """Mark the workspace as used now (it may have been removed while idle: then make it again)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / ALIVE_FILE).touch()

    def size_bytes(self) -> int:
        """Bytes of every file in the workspace."""
        return folder_size(self.folder)

    def model_folders(self) -> list[Path]:
        """Trained and opened models (folders that hold weights), newest first."""
        folders = [path.parent for base in (self.runs, self.models) for path in base.glob(f"*/{WEIGHTS_FILE}")]
        return sorted(folders, key=lambda folder: (folder / WEIGHTS_FILE).stat().st_mtime, reverse=True)

    def save_corpus(self, files: Iterable[tuple[str, bytes]], corpus: Corpus) -> Path:
        """Keep the files a corpus used, so that the originality of its models can be measured later."""
        folder = self.corpora / corpus.fingerprint[:16]
        used = set(corpus.names)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files:
            if name in used:
                (folder / safe_file_name(name)).write_bytes(data)
        return folder

    def corpus_folder(self, fingerprint: str) -> Path | None:
        """The saved training music with this fingerprint, if this workspace has it."""
        folder = self.corpora / fingerprint[:16]
        return folder if folder.is_dir() else None

    def open_model_zip(self, file_name: str, data: bytes, limits: Limits) -> Path:
        """Unpack an uploaded model zip into models/ and check that it loads; BundleError when not."""
        from musicgen.bundle import BundleError, zip_to_bundle

        self.make_room(len(data) * 3, limits)  # weights barely compress: unpacked is about the zip's size
        name = slug(Path(file_name).stem).removeprefix("musicgen-model-") or "model"
        folder = _free_name(self.models / name)
        try:
            zip_to_bundle(data, folder)
        except BundleError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    def make_room(self, needed_bytes: int, limits: Limits, keep: Iterable[Path] = ()) -> list[str]:
        """Remove this workspace's oldest models until `needed_bytes` more fit; the names removed."""
        cap = limits.session_megabytes * 1_000_000
        if needed_bytes > cap:
            raise ValueError(
                f"this needs {needed_bytes / 1e6:.0f} MB, more than the {cap / 1e6:.0f} MB a visitor may use"
            )
        keep = {Path(path).resolve() for path in keep}
        removed = []
        for folder in reversed(self.model_folders()):  # oldest first
            if self.size_bytes() + needed_bytes <= cap:
                break
            if folder.resolve() not in keep:
                removed.append(model_summary(folder).title)
                shutil.rmtree(folder, ignore_errors=True)
        if self.size_bytes() + needed_bytes > cap:
            raise ValueError("your workspace is full: download the models you want to keep, then reload the page")
        return removed


def folder_size(folder: Path) -> int:
    """Bytes of every file under `folder` (0 when it does not exist)."""
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # removed while we looked
            continue
    return total


def last_used(folder: Path) -> float:
    """When a workspace was last used (its .alive file's time, else the folder's), as a Unix time."""
    for path in (folder / ALIVE_FILE, folder):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def remove_old_workspaces(root: Path, limits: Limits, keep: Iterable[str] = (), now: float | None = None) -> list[str]:
    """Remove workspaces unused for longer than max_age_hours, then the least recently used ones while
    all of them together exceed total_megabytes; those named in `keep` stay. The names removed."""
    root, keep, now = Path(root), set(keep), time.time() if now is None else now
    if not root.is_dir():
        return []
    folders = sorted((folder for folder in root.iterdir() if folder.is_dir()), key=last_used)
    removed = []
    for folder in folders:
        if folder.name not in keep and now - last_used(folder) > limits.max_age_hours * 3600:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    remaining = [folder for folder in folders if folder.name not in removed]
    sizes = {folder: folder_size(folder) for folder in remaining}
    total = sum(sizes.values())
    for folder in remaining:  # least recently used first
        if total <= limits.total_megabytes * 1_000_000:
            break
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
            total -= sizes[folder]
    if removed:
        log.info("removed %d old session folders from %s", len(removed), root)
    return removed


_cleanup_lock = threading.Lock()
_last_cleanup = {"time": float("-inf")}


def remove_old_workspaces_now_and_then(root: Path, limits: Limits, keep: Iterable[str], every_seconds: float = 600):
    """`remove_old_workspaces` at most once every `every_seconds` in this process; the names removed."""
    with _cleanup_lock:
        if time.monotonic() - _last_cleanup["time"] < every_seconds:
            return []
        _last_cleanup["time"] = time.monotonic()
        return remove_old_workspaces(root, limits, keep)


# Describing models without loading TensorFlow.


@dataclass(frozen=True)
class ModelSummary:
    """What the page says about a model folder, read from its JSON files."""

    title: str  # e.g. "your model 849153: 3 files, 12 epochs"
    details: str  # e.g. "2 layers × 128 units, learned from 3 files; best validation loss 1.92 (epoch 11 of 12)"


def model_summary(folder: Path) -> ModelSummary:
    """A plain description of a model folder; never raises (a damaged folder says so)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())["model"]
        files = len(json.loads((folder / "corpus.json").read_text())["files"])
        history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").exists() else []
    except (OSError, ValueError, KeyError, TypeError):
        return ModelSummary(f"{folder.name} (damaged)", "its files cannot be read")
    name = f"your model {folder.name[:6]}" if folder.parent.name == "runs" else f"opened model {folder.name}"
    title = f"{name}: {_count(files, 'file')}, {_count(len(history), 'epoch')}"
    details = f"{config['layers']} layers × {config['units']} units, learned from {_count(files, 'file')}"
    if history:
        best = min(history, key=selection_loss)
        loss = "validation loss" if best.get("validation_loss") is not None else "loss"
        details += f"; best {loss} {selection_loss(best):.2f} (epoch {best['epoch']} of {len(history)})"
    return ModelSummary(title, details)


def selection_loss(entry: dict) -> float:
    """The loss that picks the best epoch, as musicgen.bundle does: validation loss when there is one."""
    return entry["validation_loss"] if entry.get("validation_loss") is not None else entry["loss"]


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes only, for file names: 'My Model (2)' -> 'my-model-2'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def safe_file_name(name: str) -> str:
    """A base name with no folders and no odd characters, keeping the extension."""
    path = Path(Path(name).name)
    return f"{slug(path.stem) or 'file'}{slug(path.suffix) and '.' + slug(path.suffix)}"


def _free_name(folder: Path) -> Path:
    """`folder`, or `folder-2`, `folder-3`... whichever does not exist yet."""
    for number in itertools.count(1):
        candidate = folder if number == 1 else folder.with_name(f"{folder.name}-{number}")
        if not candidate.exists():
            return candidate
    raise AssertionError("unreachable")


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


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


def model_name(folder: Path) -> str:
    """A short name for file names: the folder's name, or 'my-model-<id>' for a training run."""
    folder = Path(folder)
    return f"my-model-{folder.name[:6]}" if folder.parent.name == "runs" else slug(folder.name) or "model"


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
