"""A trained model as one self-describing folder, and as one zip file to download and upload.

Files: config.json (model and training settings, library version), vocabulary.json,
model.weights.h5 (best weights, no optimizer), history.json (one entry per epoch) and
corpus.json (fingerprint, file names, and the openings pieces start from). A run folder may also hold backup/ (the last
epoch with its optimizer state, for resuming); it never goes into the zip.

Every file is checked by `musicgen.boundary` before it is used, whether it comes from an
upload or from a folder: the same validators, and the weights inspected with h5py in a child
process before Keras opens them. Loading builds the architecture in our own code from the
validated settings and loads weights only: never keras.models.load_model, never pickle.
This module imports TensorFlow only when a model is built, so the page can describe folders
and check uploads before TensorFlow loads.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import musicgen
from musicgen import boundary
from musicgen.boundary import (  # noqa: F401  (BundleError and the limits are part of this module's interface)
    BUNDLE_FILES,
    JSON_FILES,
    MAX_BUNDLE_BYTES,
    MAX_JSON_BYTES,
    MAX_MODEL_PARAMETERS,
    REQUIRED_FILES,
    WEIGHTS_FILE,
    BundleError,
    EvaluationFigures,
)
from musicgen.settings import EpochReport, ModelConfig, TrainConfig
from musicgen.tokens import Vocabulary

EVALUATION_FILE = "evaluation.json"  # written into the bundle folder by musicgen.evaluate
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundleInfo:
    """Everything about a model but its weights."""

    model_config: ModelConfig
    vocabulary: Vocabulary
    fingerprint: str  # of the training corpus
    file_names: list[str] = field(default_factory=list)  # the training files
    train_config: TrainConfig | None = None  # None for a bundle whose training settings are unknown
    openings: list[list[int]] = field(default_factory=list)  # token ids: musicgen.sample.openings_of the music


@dataclass(frozen=True)
class Bundle:
    """A loaded model with its description and training history."""

    model: object  # keras.Model
    info: BundleInfo
    history: list[dict]
    path: Path
    version: str  # library version that wrote it

    @property
    def name(self) -> str:
        """Short name for file names and the screen."""
        return self.path.name


def write_info(folder: Path, info: BundleInfo) -> None:
    """Write config, vocabulary and corpus files."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "model": info.model_config.to_dict(),
        "train": asdict(info.train_config) if info.train_config is not None else None,
        "musicgen_version": musicgen.__version__,
    }
    _write_json(folder / "config.json", config)
    _write_json(folder / "vocabulary.json", info.vocabulary.to_dict())
    corpus = {"fingerprint": info.fingerprint, "files": info.file_names, "openings": info.openings}
    _write_json(folder / "corpus.json", corpus)


def write_weights(folder: Path, model, model_config: ModelConfig) -> None:
    """Save the model's weights without optimizer state (a fresh copy of the architecture holds them)."""
    from musicgen.model import build_model  # TensorFlow only when a model is built

    export = build_model(model_config)
    export.set_weights(model.get_weights())
    export.save_weights(folder / WEIGHTS_FILE)


def write_history(folder: Path, history: list[dict]) -> None:
    """Replace the run's history."""
    _write_json(folder / "history.json", history)


def selection_loss(entry: dict) -> float:
    """The loss that picks the best epoch: validation loss, or training loss without validation."""
    return entry["validation_loss"] if entry.get("validation_loss") is not None else entry["loss"]


def _write_json(path: Path, data) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    temporary.replace(path)


# --- reading a folder ---------------------------------------------------------------------


def load_bundle(folder: Path | str, max_parameters: int | None = None) -> Bundle:
    """Load a model folder, checking every file and that settings, vocabulary and weights fit together."""
    folder = Path(folder)
    info, version, _ = _checked_folder(folder, max_parameters)
    from musicgen.model import build_model  # TensorFlow only when a model is built

    model = build_model(info.model_config)
    try:
        model.load_weights(folder / WEIGHTS_FILE)
    except (ValueError, OSError, KeyError, TypeError, RuntimeError):  # the inspection makes this unexpected
        raise BundleError("the model's weights do not fit its settings") from None
    return Bundle(model, info, read_history(folder), folder, version)


def load_weight_arrays(folder: Path | str, max_parameters: int | None = None) -> tuple[BundleInfo, list[np.ndarray]]:
    """The settings and weight arrays (in the order of the Keras model's `get_weights`) of a model folder, checked as
    `load_bundle` checks them, without TensorFlow: what the sampler needs."""
    info, _, weights = _checked_folder(Path(folder), max_parameters)
    import h5py

    with h5py.File(io.BytesIO(weights), "r") as file:  # the very bytes the inspection passed
        return info, [np.asarray(file[path], np.float32) for path in boundary.weight_shapes(info.model_config)]


def _checked_folder(folder: Path, max_parameters: int | None) -> tuple[BundleInfo, str, bytes]:
    """Settings, library version and weights file of a model folder, every file checked against the others."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise BundleError(f"no trained model in {folder.name}: {WEIGHTS_FILE} is missing")
    info, version = read_info(folder, max_parameters)
    read_history(folder)
    data = boundary.read_file(weights, boundary.weights_byte_limit(info.model_config))
    boundary.inspect_weights(data, info.model_config)
    return info, version, data


def read_info(folder: Path, max_parameters: int | None = None) -> tuple[BundleInfo, str]:
    """Settings, vocabulary and corpus description of a model folder, validated; and the library version."""
    folder = Path(folder)
    names = ("config.json", "vocabulary.json", "corpus.json")
    return _info_from_files({name: boundary.read_file(folder / name, MAX_JSON_BYTES) for name in names}, max_parameters)


def read_history(folder: Path) -> list[dict]:
    """The per-epoch history of a run folder, validated; empty when there is none."""
    if not (Path(folder) / "history.json").exists():
        return []
    return boundary.check_history(_read_json(folder, "history.json"))


def read_evaluation(folder: Path) -> EvaluationFigures | None:
    """The validated evaluation.json of a model folder; None when the model was never evaluated."""
    if not (Path(folder) / EVALUATION_FILE).exists():
        return None
    return boundary.check_evaluation(_read_json(folder, EVALUATION_FILE))


def read_recommendation(bundle_path: str | Path) -> tuple[float, float] | None:
    """The cached recommended temperature range; None when the current weights were never evaluated.

    A damaged evaluation.json (not JSON, NaN, temperatures out of range or out of order...) is logged and ignored.
    """
    folder = Path(bundle_path)
    try:
        figures = read_evaluation(folder)
    except BundleError as error:
        log.warning("ignoring the %s in %s: %s", EVALUATION_FILE, folder, error)
        return None
    if figures is None or figures.recommended_temperatures is None or figures.weights_sha256 != weights_digest(folder):
        return None
    return figures.recommended_temperatures


def weights_digest(folder: Path) -> str:
    """SHA-256 of the weights file of a model folder (empty when it has none): it ties figures to weights."""
    path = Path(folder) / WEIGHTS_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def _info_from_files(files: Mapping[str, bytes], max_parameters: int | None) -> tuple[BundleInfo, str]:
    """Check config, vocabulary and corpus files against each other."""
    model_config, train_config, version = boundary.check_config(_parse(files, "config.json"), max_parameters)
    vocabulary = boundary.check_vocabulary(_parse(files, "vocabulary.json"), model_config)
    fingerprint, file_names, openings = boundary.check_corpus(_parse(files, "corpus.json"), len(vocabulary))
    return BundleInfo(model_config, vocabulary, fingerprint, file_names, train_config, openings), version


def _parse(files: Mapping[str, bytes], name: str) -> object:
    return boundary.parse_json(files[name], name)


def _read_json(folder: Path, name: str) -> object:
    return boundary.parse_json(boundary.read_file(Path(folder) / name, MAX_JSON_BYTES), name)


# --- describing a folder without TensorFlow ---------------------------------------------


@dataclass(frozen=True)
class BundleDescription:
    """What the page shows about a model folder: its checked settings, corpus and history, but no weights."""

    model_config: ModelConfig
    train_config: TrainConfig | None  # None for a bundle whose training settings are unknown
    version: str  # library version that wrote it
    fingerprint: str  # of the training corpus
    file_count: int  # training files
    history: tuple[EpochReport, ...]  # one entry per finished epoch

    @property
    def best_epoch(self) -> EpochReport | None:
        """The epoch whose weights the folder keeps (lowest validation loss, or loss); None before any."""
        return min(self.history, key=lambda report: selection_loss(asdict(report)), default=None)


_descriptions: OrderedDict[Path, tuple[tuple, BundleDescription | str]] = OrderedDict()  # folder: (stamps, result)
_descriptions_lock = threading.Lock()


def describe_bundle(folder: Path | str) -> BundleDescription:
    """Config, corpus and history of a model folder, validated; BundleError when they cannot be used.

    Cheap enough for every run of the page: no TensorFlow and no weights, and a folder is parsed again only
    when the modification time or size of its config.json, corpus.json or history.json changes.
    """
    folder = Path(folder).resolve()
    stamps = tuple(_stamp(folder / name) for name in ("config.json", "corpus.json", "history.json"))
    with _descriptions_lock:
        cached = _descriptions.get(folder)
    if cached is None or cached[0] != stamps:
        cached = (stamps, _describe(folder))
        with _descriptions_lock:
            _descriptions[folder] = cached
            _descriptions.move_to_end(folder)
            while len(_descriptions) > 128:
                _descriptions.popitem(last=False)
    if isinstance(cached[1], str):
        raise BundleError(cached[1])  # a new exception each time: a cached one would grow its traceback
    return cached[1]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _describe(folder: Path) -> BundleDescription | str:
    """The description, or the BundleError's message, so that a damaged folder is not parsed on every run."""
    try:
        model_config, train_config, version = boundary.check_config(_read_json(folder, "config.json"), None)
        fingerprint, file_names, _ = boundary.check_corpus(
            _read_json(folder, "corpus.json"), model_config.vocabulary_size
        )
        history = tuple(EpochReport(**entry) for entry in read_history(folder))
    except BundleError as error:
        return str(error)
    return BundleDescription(model_config, train_config, version, fingerprint, len(file_names), history)


# --- the zip ------------------------------------------------------------------------------


def bundle_to_zip(folder: Path) -> bytes:
    """One zip file of the bundle's files, for download."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in BUNDLE_FILES:
            if (folder / name).exists():
                archive.write(folder / name, name)
    return buffer.getvalue()


def read_model_zip(data: bytes, max_parameters: int = MAX_MODEL_PARAMETERS) -> dict[str, bytes]:
    """The bundle files of an uploaded zip, every one checked (the weights in a child process); writes nothing.

    Raises BundleError, with one plain sentence, for anything that is not a usable musicgen model of at most
    `max_parameters` weights; no other exception, whatever the bytes.
    """
    with boundary.open_zip(data) as archive:
        members = boundary.bundle_members(archive)
        missing = [name for name in REQUIRED_FILES if name not in members]
        if missing:
            raise BundleError(f"this model file is incomplete: {missing[0]} is missing")
        files = {
            name: boundary.inflate(archive, members[name], MAX_JSON_BYTES) for name in JSON_FILES if name in members
        }
        info, _ = _info_from_files(files, max_parameters)
        for name, check in (("history.json", boundary.check_history), ("evaluation.json", boundary.check_evaluation)):
            if name in files:
                check(_parse(files, name))
        weights = boundary.inflate(archive, members[WEIGHTS_FILE], boundary.weights_byte_limit(info.model_config))
    boundary.inspect_weights(weights, info.model_config)
    return files | {WEIGHTS_FILE: weights}


def write_bundle_files(files: Mapping[str, bytes], folder: Path) -> None:
    """Create `folder` holding these bundle files, all at once: a sibling folder renamed into place.

    On any failure nothing is left behind; OSError when `folder` exists and is not empty.
    """
    unknown = set(files) - set(BUNDLE_FILES)
    if unknown:
        raise ValueError(f"not bundle files: {sorted(unknown)}")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", suffix=".partial", dir=folder.parent))
    try:
        for name, data in files.items():
            (partial / name).write_bytes(data)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already after the rename


def zip_to_bundle(data: bytes, folder: Path, max_parameters: int = MAX_MODEL_PARAMETERS) -> Bundle:
    """Check an uploaded zip, unpack it into the new `folder` and load it; a refused upload leaves nothing."""
    files = read_model_zip(data, max_parameters)
    try:
        write_bundle_files(files, folder)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BundleError("there is no room left on the server to unpack this model") from None
        raise
    try:
        return load_bundle(folder, max_parameters)
    except BundleError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
