"""A trained model as one self-describing folder, and as one zip file to download and upload.

Files: config.json (model and training settings, library version), vocabulary.json,
model.weights.h5 (best weights, no optimizer), history.json (one entry per epoch) and
corpus.json (fingerprint and file names). A run folder may also hold backup/ (the last
epoch with its optimizer state, for resuming); it never goes into the zip.

Loading builds the architecture in our own code from the validated settings and loads
weights only: never keras.models.load_model, never pickle.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py

import musicgen
from musicgen.model import ModelConfig, build_model
from musicgen.tokens import Vocabulary

BUNDLE_FILES = ("config.json", "vocabulary.json", "model.weights.h5", "history.json", "corpus.json", "evaluation.json")
MAX_BUNDLE_BYTES = 60_000_000  # a zipped bundle, and the files unpacked from it


class BundleError(Exception):
    """A model folder or file that cannot be used, with a plain reason."""


@dataclass(frozen=True)
class BundleInfo:
    """Everything about a model but its weights."""

    model_config: ModelConfig
    vocabulary: Vocabulary
    fingerprint: str  # of the training corpus
    file_names: list[str] = field(default_factory=list)  # the training files
    train_config: object = None  # musicgen.train.TrainConfig; None for a bundle whose settings are unknown


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
    _write_json(folder / "corpus.json", {"fingerprint": info.fingerprint, "files": info.file_names})


def write_weights(folder: Path, model, model_config: ModelConfig) -> None:
    """Save the model's weights without optimizer state (a fresh copy of the architecture holds them)."""
    export = build_model(model_config)
    export.set_weights(model.get_weights())
    export.save_weights(folder / "model.weights.h5")


def read_history(folder: Path) -> list[dict]:
    """The per-epoch history of a run folder; empty when there is none."""
    path = Path(folder) / "history.json"
    return json.loads(path.read_text()) if path.exists() else []


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


def load_bundle(folder: Path | str) -> Bundle:
    """Load a model folder, checking that its settings, vocabulary and weights fit together."""
    folder = Path(folder)
    if not (folder / "model.weights.h5").is_file():
        raise BundleError(f"no trained model in {folder.name}: model.weights.h5 is missing")
    info, version = read_info(folder)
    _check_weight_shapes(folder / "model.weights.h5", info)
    model = build_model(info.model_config)
    try:
        model.load_weights(folder / "model.weights.h5")
    except (ValueError, OSError, KeyError) as error:
        raise BundleError(f"the model's weights do not fit its settings ({error})") from None
    return Bundle(model, info, read_history(folder), folder, version)


def read_info(folder: Path) -> tuple[BundleInfo, str]:
    """Settings, vocabulary and corpus description of a model folder, validated."""
    from musicgen.train import TrainConfig  # train imports this module

    config = _read_json(folder, "config.json")
    corpus = _read_json(folder, "corpus.json")
    try:
        model_config = ModelConfig.from_dict(config["model"])
        vocabulary = Vocabulary.from_dict(_read_json(folder, "vocabulary.json"))
        train_config = TrainConfig.from_dict(config["train"]) if config.get("train") else None
        info = BundleInfo(model_config, vocabulary, str(corpus["fingerprint"]), list(corpus["files"]), train_config)
    except (KeyError, TypeError, ValueError) as error:
        raise BundleError(f"the model's settings are damaged or from another program ({error})") from None
    if model_config.vocabulary_size != len(vocabulary):
        raise BundleError(
            f"the model was built for {model_config.vocabulary_size} tokens but its vocabulary has "
            f"{len(vocabulary)}: its files come from different models"
        )
    return info, str(config.get("musicgen_version", "unknown"))


def _read_json(folder: Path, name: str):
    try:
        return json.loads((folder / name).read_text())
    except FileNotFoundError:
        raise BundleError(f"the model is incomplete: {name} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"the model's {name} is damaged") from None


def _check_weight_shapes(path: Path, info: BundleInfo) -> None:
    """Compare the embedding table in the weights file with the vocabulary before Keras sees it."""
    expected = (len(info.vocabulary), info.model_config.embedding_size)
    try:
        with h5py.File(path, "r") as weights:
            found = tuple(weights["layers/embedding/vars/0"].shape)
    except (OSError, KeyError):
        raise BundleError("the model's weights file is damaged or is not a musicgen model") from None
    if found[0] != expected[0]:
        raise BundleError(
            f"the model's weights were trained with {found[0]} tokens but its vocabulary has {expected[0]}: "
            "the weights and the vocabulary come from different models"
        )
    if found != expected:
        raise BundleError(f"the model's weights have the shape {found}, its settings say {expected}")


def bundle_to_zip(folder: Path) -> bytes:
    """One zip file of the bundle's files, for download."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in BUNDLE_FILES:
            if (folder / name).exists():
                archive.write(folder / name, name)
    return buffer.getvalue()


def zip_to_bundle(data: bytes, folder: Path) -> Bundle:
    """Unpack an uploaded zip into `folder` (known file names only) and load it."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"this model file is {len(data) / 1e6:.0f} MB; the limit is {MAX_BUNDLE_BYTES // 1_000_000} MB"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: info for info in archive.infolist() if info.filename in BUNDLE_FILES}
            if sum(info.file_size for info in members.values()) > MAX_BUNDLE_BYTES:
                raise BundleError("this model file unpacks to more than the size limit")
            folder.mkdir(parents=True, exist_ok=True)
            for name, member in members.items():
                (folder / name).write_bytes(archive.read(member))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError):
        raise BundleError("this is not a musicgen model file (it should be a .zip downloaded from musicgen)") from None
    return load_bundle(folder)
