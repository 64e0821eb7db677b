"""Every visitor's own folder on disk, the limits on them, and the clean-up of old ones.

- The runs root (env MUSICGEN_RUNS, else a folder in the temp directory) holds one
  `Workspace` per browser session: its trainings (`runs/`), the models it opened from zip
  files (`models/`), the music each of its models learned from (`corpora/`) and the audio
  of the pieces on show (`pieces/`). A workspace is capped in size.
- The app only ever removes what it made: the runs root carries ROOT_MARKER and each
  workspace WORKSPACE_MARKER. Clean-up removes marked workspaces unused for max_age_hours
  (or, over the total cap, the least recently used), never one used in the last
  RECENT_USE_SECONDS, nor one whose owner has a training queued or running.
- `runs_root` refuses, in one sentence, a MUSICGEN_RUNS that could make the app write into
  (and clean up) a folder that holds other files.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from musicgen.boundary import WEIGHTS_FILE
from musicgen.corpus import Corpus
from musicgen.validation import check_ranges, number_from_environment

RUNS_ENV = "MUSICGEN_RUNS"  # folder that holds one folder per session
DEFAULT_RUNS_FOLDER = "musicgen-sessions"  # in the temp directory, when MUSICGEN_RUNS is not set
ROOT_MARKER = ".musicgen-runs"  # in the runs root the app made or adopted while it was empty
WORKSPACE_MARKER = ".musicgen-workspace"  # in each workspace; its time says when the workspace was last used
ROOT_NOTE = f"musicgen keeps one folder per visitor here, and removes only the folders holding {WORKSPACE_MARKER}.\n"
# A visitor listening to a piece or reading the page sends nothing for minutes, and only a
# page run marks the workspace as used: one used this recently has someone on its page.
RECENT_USE_SECONDS = 15 * 60
WORKSPACE_FULL = "your workspace is full: download the models you want to keep, then reload the page"

log = logging.getLogger(__name__)


# Limits.


@dataclass(frozen=True)
class Limits:
    """Resource limits of one app process; `from_environment` reads them from MUSICGEN_* variables."""

    max_trainings: int = 1  # trainings running at once in the process, 1..16 (all within the memory budget)
    session_megabytes: int = 300  # disk one session may fill, 10..100000 MB
    total_megabytes: int = 5000  # disk all sessions may fill before the least recently used go, 10..10**6 MB
    max_age_hours: float = 24.0  # a session folder unused this long is removed, 0.01..10000 hours
    abandon_seconds: float = 600.0  # a training nobody looked at this long stops, 10..86400 s

    RANGES: ClassVar[dict[str, tuple[float, float]]] = dict(
        max_trainings=(1, 16),
        session_megabytes=(10, 100_000),
        total_megabytes=(10, 1_000_000),
        max_age_hours=(0.01, 10_000.0),
        abandon_seconds=(10.0, 86_400.0),
    )
    VARIABLES: ClassVar[dict[str, str]] = dict(
        max_trainings="MUSICGEN_MAX_TRAININGS",
        session_megabytes="MUSICGEN_SESSION_MB",
        total_megabytes="MUSICGEN_TOTAL_MB",
        max_age_hours="MUSICGEN_MAX_AGE_HOURS",
        abandon_seconds="MUSICGEN_ABANDON_SECONDS",
    )

    def __post_init__(self) -> None:
        check_ranges(self, **self.RANGES)

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Limits:
        """Limits from the variables in VARIABLES; defaults for those not set."""
        environ = os.environ if environ is None else environ
        settings = {}
        for name, variable in cls.VARIABLES.items():
            if environ.get(variable, "").strip():
                settings[name] = number_from_environment(variable, environ[variable], cls.RANGES[name])
        return cls(**settings)


# The runs root.


def runs_root(environ: dict[str, str] | None = None) -> Path:
    """The folder of every session's workspace, made and marked if new; ValueError when it cannot be used."""
    environ = os.environ if environ is None else environ
    value = environ.get(RUNS_ENV, "").strip()
    path = Path(value).expanduser() if value else Path(tempfile.gettempdir()) / DEFAULT_RUNS_FOLDER
    if not path.is_absolute():  # a hosted app's working folder is unknown
        example = Path(tempfile.gettempdir()) / "musicgen-runs"
        raise ValueError(f"{RUNS_ENV} must be an absolute path such as {example}, got {value!r}")
    problem = claim_root(path)
    if problem and value:
        raise ValueError(f"{RUNS_ENV} names {path}, but {problem[0]}: give {problem[1]}, or leave it unset")
    if problem:
        raise ValueError(
            f"{RUNS_ENV} is not set and its default {path} cannot be used, as {problem[0]}: set it to {problem[1]}"
        )
    return path


def claim_root(path: Path) -> tuple[str, str] | None:
    """Make and mark `path` as the runs root unless it holds other files; else (what is wrong, what to give)."""
    inside = f"a folder inside it for musicgen alone, such as {path / 'musicgen-runs'}"
    elsewhere = f"a new folder's path, such as {Path(tempfile.gettempdir()) / 'musicgen-runs'}"
    try:
        if path.exists() and not path.is_dir():
            return "it is not a folder", elsewhere
        marked = (path / ROOT_MARKER).is_file()
        if path.is_dir() and not marked and any(path.iterdir()):
            return "it already holds other files", inside
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            return "this app may not write to it", elsewhere
        if not marked:
            (path / ROOT_MARKER).write_text(ROOT_NOTE)
    except OSError as error:
        return f"it cannot be made or used ({(error.strerror or str(error)).lower()})", elsewhere
    return None


# Workspaces.


@dataclass(frozen=True)
class Workspace:
    """One session's folder: runs/ (trainings), models/ (opened zip files), corpora/ (training music)."""

    folder: Path

    @classmethod
    def create(cls, root: Path) -> Workspace:
        """A new, empty, marked workspace with a random name under `root`."""
        workspace = cls(Path(root) / secrets.token_hex(8))
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

    def keep_audio(self, file_stem: str, sound: bytes, extension: str) -> Path:
        """Store a piece's audio; the path to play and download it from."""
        self.pieces.mkdir(parents=True, exist_ok=True)
        path = self.pieces / f"{slug(file_stem) or 'piece'}.{extension}"
        path.write_bytes(sound)
        return path

    def forget_pieces(self) -> None:
        """Remove the audio of earlier pieces."""
        shutil.rmtree(self.pieces, ignore_errors=True)

    def touch(self) -> None:
        """Mark the workspace as used now (it may have been removed while idle: then make it again)."""
        root = self.folder.parent
        if not root.exists():  # made here, so marked as the app's own
            root.mkdir(parents=True, exist_ok=True)
            (root / ROOT_MARKER).write_text(ROOT_NOTE)
        self.folder.mkdir(exist_ok=True)
        (self.folder / WORKSPACE_MARKER).touch()

    def size_bytes(self) -> int:
        """Bytes of every file in the workspace."""
        return folder_size(self.folder)

    def model_folders(self) -> list[Path]:
        """Trained and opened models (folders that hold weights), newest first."""
        weights = [path for base in (self.runs, self.models) for path in base.glob(f"*/{WEIGHTS_FILE}")]
        folders = [path.parent for path in weights if not path.parent.name.startswith(".")]  # .partial: being written
        return sorted(folders, key=lambda folder: (folder / WEIGHTS_FILE).stat().st_mtime, reverse=True)

    def save_corpus(
        self, files: Iterable[tuple[str, bytes]], corpus: Corpus, limits: Limits, keep: Iterable[Path] = ()
    ) -> list[str]:
        """Keep the files a corpus used (to measure the originality of its models later), making room
        for them as for a model (`make_room`); the names of the models removed to make room."""
        folder = self.corpora / corpus.fingerprint[:16]
        if folder.is_dir():  # the same music, kept for an earlier training
            return []
        used = corpus_files(files, corpus)
        removed = self.make_room(sum(len(data) for data in used.values()), limits, keep)
        partial = self.corpora / f".partial-{secrets.token_hex(4)}"
        partial.mkdir(parents=True)
        for name, data in used.items():
            (partial / name).write_bytes(data)
        try:
            partial.rename(folder)  # all files or none: a corpus folder always holds the whole music
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not folder.is_dir():  # else kept meanwhile by another run of the page
                raise
        return removed

    def corpus_folder(self, fingerprint: str) -> Path | None:
        """The saved training music with this fingerprint, if this workspace has it."""
        folder = self.corpora / fingerprint[:16]
        return folder if folder.is_dir() else None

    def open_model_zip(self, file_name: str, data: bytes, limits: Limits, keep: Iterable[Path] = ()) -> Path:
        """Check an uploaded model zip, then unpack it into models/; BundleError (and nothing removed) when bad."""
        from musicgen.bundle import read_model_zip, write_bundle_files

        files = read_model_zip(data)  # before make_room: a refused file must not cost the visitor a model
        self.make_room(sum(len(content) for content in files.values()), limits, keep)
        name = slug(Path(file_name).stem).removeprefix("musicgen-model-") or "model"
        folder = free_name(self.models / name)
        write_bundle_files(files, folder)
        return folder

    def make_room(self, needed_bytes: int, limits: Limits, keep: Iterable[Path] = ()) -> list[str]:
        """Remove this workspace's oldest models until `needed_bytes` more fit; the names removed."""
        cap = limits.session_megabytes * 1_000_000
        if needed_bytes > cap:
            raise ValueError(
                f"this needs {needed_bytes / 1e6:.0f} MB, more than the {cap / 1e6:.0f} MB a visitor may use"
            )
        keep = {Path(path).resolve() for path in keep}
        oldest_first = [folder for folder in reversed(self.model_folders()) if folder.resolve() not in keep]
        if self.size_bytes() - sum(folder_size(folder) for folder in oldest_first) + needed_bytes > cap:
            raise ValueError(WORKSPACE_FULL)  # refused before anything is removed
        removed = []
        for folder in oldest_first:
            if self.size_bytes() + needed_bytes <= cap:
                break
            removed.append(model_summary(folder).title)
            shutil.rmtree(folder, ignore_errors=True)
        if self.size_bytes() + needed_bytes > cap:  # another page run of this visitor wrote meanwhile
            raise ValueError(WORKSPACE_FULL)
        return removed


def corpus_files(files: Iterable[tuple[str, bytes]], corpus: Corpus) -> dict[str, bytes]:
    """The files the corpus used (one report per file given), under names that never collide."""
    used = [(name, data) for (name, data), report in zip(files, corpus.reports, strict=True) if report.error is None]
    return {numbered_file_name(number, name): data for number, (name, data) in enumerate(used, 1)}


def folder_size(folder: Path) -> int:
    """Bytes of every file under `folder` (0 when it does not exist)."""
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # removed while we looked
            continue
    return total


# Clean-up.


def workspace_folders(root: Path) -> list[Path]:
    """The folders under `root` that carry WORKSPACE_MARKER, least recently used first."""
    if not Path(root).is_dir():
        return []
    folders = [
        folder
        for folder in Path(root).iterdir()
        if folder.is_dir() and not folder.is_symlink() and (folder / WORKSPACE_MARKER).is_file()
    ]
    return sorted(folders, key=last_used)


def last_used(folder: Path) -> float:
    """When a workspace was last used (its marker's time), as a Unix time; 0 when it has none."""
    try:
        return (folder / WORKSPACE_MARKER).stat().st_mtime
    except OSError:
        return 0.0


def remove_old_workspaces(root: Path, limits: Limits, keep: Iterable[str] = (), now: float | None = None) -> list[str]:
    """Remove workspaces unused for longer than max_age_hours, then the least recently used ones while
    all of them together exceed total_megabytes; those named in `keep` or used in the last
    RECENT_USE_SECONDS stay, and folders without WORKSPACE_MARKER are never touched. The names removed."""
    keep, now = set(keep), time.time() if now is None else now
    folders = workspace_folders(root)
    idle = {folder: now - last_used(folder) for folder in folders}
    removable = [folder for folder in folders if folder.name not in keep and idle[folder] > RECENT_USE_SECONDS]
    removed = [folder for folder in removable if idle[folder] > limits.max_age_hours * 3600]
    total = sum(folder_size(folder) for folder in folders if folder not in removed)
    for folder in removable:  # least recently used first
        if total <= limits.total_megabytes * 1_000_000:
            break
        if folder not in removed:
            removed.append(folder)
            total -= folder_size(folder)
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    if removed:
        log.info("removed %d old session folders from %s", len(removed), root)
    return [folder.name for folder in removed]


_cleanup_lock = threading.Lock()
_last_cleanup = {"time": float("-inf")}


def remove_old_workspaces_now_and_then(root: Path, limits: Limits, keep: Iterable[str], every_seconds: float = 600):
    """`remove_old_workspaces` at most once every `every_seconds` in this process; the names removed."""
    with _cleanup_lock:
        if time.monotonic() - _last_cleanup["time"] < every_seconds:
            return []
        _last_cleanup["time"] = time.monotonic()
        return remove_old_workspaces(root, limits, keep)


# Describing and naming models without loading TensorFlow.


@dataclass(frozen=True)
class ModelSummary:
    """What the page says about a model folder, read from its JSON files."""

    title: str  # e.g. "your model 849153: 3 files, 12 epochs"
    details: str  # e.g. "2 layers × 128 units, learned from 3 files; best validation loss 1.92 (epoch 11 of 12)"


def model_summary(folder: Path) -> ModelSummary:
    """A plain description of a model folder from its validated files; never raises (a damaged folder says so)."""
    from musicgen.bundle import BundleError, describe_bundle, selection_loss

    folder = Path(folder)
    try:
        described = describe_bundle(folder)
    except BundleError:
        return ModelSummary(f"{folder.name} (damaged)", "its files cannot be read")
    files, model, best = described.file_count, described.model_config, described.best_epoch
    name = f"your model {folder.name[:6]}" if folder.parent.name == "runs" else f"opened model {folder.name}"
    title = f"{name}: {_count(files, 'file')}, {_count(len(described.history), 'epoch')}"
    details = f"{model.layers} layers × {model.units} units, learned from {_count(files, 'file')}"
    if best is not None:
        loss = "validation loss" if best.validation_loss is not None else "loss"
        details += f"; best {loss} {selection_loss(asdict(best)):.2f} (epoch {best.epoch} of {len(described.history)})"
    return ModelSummary(title, details)


def model_name(folder: Path) -> str:
    """A short name for file names: the folder's name, or 'my-model-<id>' for a training run."""
    folder = Path(folder)
    return f"my-model-{folder.name[:6]}" if folder.parent.name == "runs" else slug(folder.name) or "model"


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


# Names.


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes only, for file names: 'My Model (2)' -> 'my-model-2'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


def numbered_file_name(number: int, name: str) -> str:
    """'003-my-song.mid' for the third file, named 'My Song.MID': no folders, no odd characters, no collisions."""
    return f"{number:03d}-{slug(Path(name).stem) or 'piece'}.mid"


def free_name(folder: Path) -> Path:
    """`folder`, or `folder-2`, `folder-3`... whichever does not exist yet."""
    number = 1
    candidate = folder
    while candidate.exists():
        number += 1
        candidate = folder.with_name(f"{folder.name}-{number}")
    return candidate
