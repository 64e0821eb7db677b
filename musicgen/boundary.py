"""Model files from outside (an uploaded zip, a model folder) checked before anything else reads them.

No TensorFlow or Keras here: the page uses this module before TensorFlow loads. Every check
has a hard limit that holds whatever the bytes claim about themselves:

- the zip: its size, then the entry count and the central directory's size read from its
  End Of Central Directory record before `zipfile` parses anything; no Zip64, no encryption,
  only stored or deflated entries, no name twice; only the bundle's own file names are
  unpacked, in chunks, counting the bytes actually inflated (not the sizes the headers claim);
- JSON: its size and its nesting depth (scanned in the bytes) before `json.loads`, no NaN or
  Infinity, then every field checked into typed data with explicit ranges;
- the weights: h5py opens them in a child process that may use at most INSPECTION_MEMORY_BYTES
  and INSPECTION_SECONDS, so that a file which crashes or bloats libhdf5 cannot take the app
  down. The file must hold exactly the arrays the settings imply, float32 of the exact shapes,
  stored in the file itself (no external or virtual storage, no filters, no links), and every
  array is read in full so that Keras cannot later fail differently. One inspection costs
  about 110 ms for the shipped model (3.7 MB) and 140 ms for the largest admitted (24 MB),
  nearly all of it the child's start-up; weights that passed are remembered by their digest.

Every failure is one BundleError with a plain sentence.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from musicgen.sample import MAX_OPENINGS, MAX_PRIMER_TOKENS
from musicgen.settings import EPOCH_RANGE, TEMPERATURE_RANGE, EpochReport, ModelConfig, TrainConfig
from musicgen.tokens import TokenConfig, Vocabulary

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.weights.h5"
JSON_FILES = ("config.json", "vocabulary.json", "history.json", "corpus.json", "evaluation.json")
BUNDLE_FILES = ("config.json", "vocabulary.json", WEIGHTS_FILE, "history.json", "corpus.json", "evaluation.json")
REQUIRED_FILES = ("config.json", "vocabulary.json", WEIGHTS_FILE, "corpus.json")

MAX_BUNDLE_BYTES = 30_000_000  # a zipped bundle; the largest model admitted has 24 MB of float32 weights
MAX_MODEL_PARAMETERS = 6_000_000  # weights of the largest model an upload may hold
MAX_ZIP_ENTRIES = 32  # entries of an uploaded zip, folders and ignored files included
MAX_DIRECTORY_BYTES = 64_000  # the zip's central directory (about 100 bytes an entry)
MAX_JSON_BYTES = 1_000_000  # each JSON file of a bundle
MAX_JSON_DEPTH = 32  # nesting of [ and {; musicgen writes at most 3
WEIGHTS_SLACK_BYTES = 1_000_000  # HDF5 headers around the float32 numbers (29 kB in the shipped model)
MAX_FILE_NAMES = 10_000  # training files listed in corpus.json
MAX_NAME_CHARS = 255  # one training file's name
MAX_VERSION_CHARS = 40  # the library version in config.json
INSPECTION_SECONDS = 20  # wall-clock limit of the weights inspection
INSPECTION_MEMORY_BYTES = 1 << 30  # address space of the inspecting child process
CHUNK_BYTES = 1 << 16  # inflated at a time

NOT_A_MODEL_FILE = "this is not a musicgen model file (it should be a .zip downloaded from musicgen)"
DAMAGED_WEIGHTS = "the model's weights file is damaged or is not a musicgen model"
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    zlib.error,
)
_END_RECORD = struct.Struct("<4s4H2LH")  # End Of Central Directory: signature, 4 counts, size, offset, comment
_END_SIGNATURE, _ZIP64_LOCATOR_SIGNATURE = b"PK\x05\x06", b"PK\x06\x07"
_REFUSED_FLAGS = 0x1 | 0x20 | 0x40 | 0x2000  # encrypted, patched data, strong encryption, encrypted directory
_HEX = re.compile(r"[0-9a-f]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BundleError(Exception):
    """A model folder or file that cannot be used, with a plain reason."""


@dataclass(frozen=True)
class EvaluationFigures:
    """What the app uses of evaluation.json."""

    weights_sha256: str  # of the weights file the figures were measured with
    recommended_temperatures: tuple[float, float] | None  # low <= high, within TEMPERATURE_RANGE


# --- the zip ------------------------------------------------------------------------------


def open_zip(data: bytes) -> zipfile.ZipFile:
    """The uploaded zip, opened once its size, entries and central directory are within the limits."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"this model file is {len(data) / 1e6:.0f} MB; the limit is {MAX_BUNDLE_BYTES // 1_000_000} MB"
        )
    _check_end_record(data)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS:
        raise BundleError(NOT_A_MODEL_FILE) from None
    _check_entries(archive.infolist())
    return archive


def bundle_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The entries named like bundle files; anything else (folders, __MACOSX/...) is left packed."""
    return {entry.filename: entry for entry in archive.infolist() if entry.filename in BUNDLE_FILES}


def inflate(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, limit: int) -> bytes:
    """One entry's bytes, inflated in chunks and refused as soon as more than `limit` bytes come out."""
    too_large = BundleError(f"the model's {entry.filename} is larger than {_megabytes(limit)}")
    if entry.file_size > limit:
        raise too_large
    chunks, total = [], 0
    try:
        with archive.open(entry) as stream:
            while chunk := stream.read(CHUNK_BYTES):
                total += len(chunk)
                if total > limit:
                    raise too_large
                chunks.append(chunk)
    except ZIP_ERRORS:
        raise BundleError(f"this model file is damaged: its {entry.filename} cannot be unpacked") from None
    if total != entry.file_size:
        raise BundleError(f"this model file is damaged: its {entry.filename} cannot be unpacked")
    return b"".join(chunks)


def _check_end_record(data: bytes) -> None:
    """Refuse Zip64 and too many entries or too large a directory before zipfile reads the directory."""
    position = _end_record_position(data)
    record = data[position : position + _END_RECORD.size]
    if position < 0 or len(record) != _END_RECORD.size:
        raise BundleError(NOT_A_MODEL_FILE)
    _, _, _, disk_entries, entries, directory_size, directory_offset, _ = _END_RECORD.unpack(record)
    zip64 = data[max(position - 20, 0) : position].startswith(_ZIP64_LOCATOR_SIGNATURE)
    if zip64 or 0xFFFF in (disk_entries, entries) or 0xFFFFFFFF in (directory_size, directory_offset):
        raise BundleError(NOT_A_MODEL_FILE + "; this one is in the Zip64 format")
    if max(disk_entries, entries) > MAX_ZIP_ENTRIES or directory_size > MAX_DIRECTORY_BYTES:
        raise BundleError(f"this model file holds too many files; a musicgen model has {len(BUNDLE_FILES)}")


def _end_record_position(data: bytes) -> int:
    """Where zipfile finds the End Of Central Directory record (the same search as its _EndRecData), or -1."""
    size = _END_RECORD.size
    if len(data) >= size and data[-size:].startswith(_END_SIGNATURE) and data.endswith(b"\0\0"):
        return len(data) - size
    start = max(len(data) - (1 << 16) - size, 0)
    found = data.rfind(_END_SIGNATURE, start)
    return found


def _check_entries(entries: list[zipfile.ZipInfo]) -> None:
    if len(entries) > MAX_ZIP_ENTRIES:
        raise BundleError(f"this model file holds too many files; a musicgen model has {len(BUNDLE_FILES)}")
    names = [entry.filename for entry in entries]
    if len(set(names)) != len(names):
        raise BundleError("this model file holds the same file name twice")
    for entry in entries:
        if entry.flag_bits & _REFUSED_FLAGS:
            raise BundleError("this model file is encrypted or password-protected; musicgen's never are")
        if entry.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise BundleError("this model file is compressed in a way musicgen does not read (only the usual zip)")


# --- JSON ---------------------------------------------------------------------------------

_DEPTH_STEP = np.zeros(256, np.int64)
_DEPTH_STEP[list(b"[{")] = 1
_DEPTH_STEP[list(b"]}")] = -1


def read_file(path: Path, limit: int) -> bytes:
    """The bytes of a bundle file, refused when larger than `limit`."""
    try:
        with open(path, "rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError:
        raise BundleError(f"the model is incomplete: {path.name} is missing") from None
    except OSError:
        raise BundleError(f"the model's {path.name} cannot be read") from None
    if len(data) > limit:
        raise BundleError(f"the model's {path.name} is larger than {_megabytes(limit)}")
    return data


def parse_json(data: bytes, name: str) -> object:
    """JSON within the size and depth limits, without NaN or Infinity."""
    if len(data) > MAX_JSON_BYTES:
        raise BundleError(f"the model's {name} is larger than {_megabytes(MAX_JSON_BYTES)}")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BundleError(f"the model's {name} is damaged: it is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise BundleError(f"the model's {name} is damaged: it is not valid JSON") from None


def json_depth(data: bytes) -> int:
    """The deepest nesting of [ and { outside strings, found without parsing, in linear time (numpy)."""
    raw = np.frombuffer(data, np.uint8)
    positions = np.arange(len(raw))
    last_other = np.maximum.accumulate(np.where(raw != ord("\\"), positions, -1))  # last byte that is no backslash
    backslashes_before = positions - 1 - np.concatenate(([-1], last_other[:-1]))
    quotes = (raw == ord('"')) & (backslashes_before % 2 == 0)  # a quote escaped by an odd run of \ is text
    outside = np.cumsum(quotes) % 2 == 0  # after an even number of quotes (a closing quote counts as outside)
    steps = np.where(outside, _DEPTH_STEP[raw], 0)
    return int(np.cumsum(steps).max(initial=0))


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large")
    return value


# --- the JSON files' contents -------------------------------------------------------------


def check_config(
    data: object, max_parameters: int | None = MAX_MODEL_PARAMETERS
) -> tuple[ModelConfig, TrainConfig | None, str]:
    """Model settings, training settings (None when unknown) and library version from config.json."""
    with _reasons("config.json"):
        _check_keys(data, {"model"}, {"train", "musicgen_version"})
        model_config = ModelConfig.from_dict(data["model"])
        train = data.get("train")
        train_config = None if train is None else TrainConfig.from_dict(train)
        version = data.get("musicgen_version", "unknown")
        if not isinstance(version, str) or len(version) > MAX_VERSION_CHARS:
            raise ValueError(f"the version must be text of at most {MAX_VERSION_CHARS} characters")
    count = parameter_count(model_config)
    if max_parameters is not None and count > max_parameters:
        raise BundleError(f"the model has {count:,} weights; musicgen opens models of up to {max_parameters:,}")
    return model_config, train_config, version


def check_vocabulary(data: object, model_config: ModelConfig) -> Vocabulary:
    """The vocabulary of vocabulary.json, which must have the size the model settings say."""
    with _reasons("vocabulary.json"):
        _check_keys(data, {"config", "names"})
        _check_keys(data["config"], set(), {field.name for field in fields(TokenConfig)})
        if not isinstance(data["names"], list):
            raise ValueError("the token names must be a list")
        vocabulary = Vocabulary.from_dict(data)
    if len(vocabulary) != model_config.vocabulary_size:
        raise BundleError(
            f"the model was built for {model_config.vocabulary_size} tokens but its vocabulary has "
            f"{len(vocabulary)}: its files come from different models"
        )
    return vocabulary


def check_corpus(data: object, vocabulary_size: int) -> tuple[str, list[str], list[list[int]]]:
    """The fingerprint, file names and openings (token ids; none in bundles of earlier versions) of corpus.json."""
    with _reasons("corpus.json"):
        _check_keys(data, {"fingerprint", "files"}, {"openings"})
        fingerprint, names = data["fingerprint"], data["files"]
        if not isinstance(fingerprint, str) or not _HEX.fullmatch(fingerprint):
            raise ValueError("the fingerprint must be up to 64 hexadecimal digits")
        if not isinstance(names, list) or len(names) > MAX_FILE_NAMES:
            raise ValueError(f"the training files must be a list of at most {MAX_FILE_NAMES:,} names")
        if not all(isinstance(name, str) and len(name) <= MAX_NAME_CHARS for name in names):
            raise ValueError(f"each training file name must be text of at most {MAX_NAME_CHARS} characters")
        openings = data.get("openings", [])
        if not isinstance(openings, list) or len(openings) > MAX_OPENINGS:
            raise ValueError(f"the openings must be a list of at most {MAX_OPENINGS}")
        for opening in openings:
            if not isinstance(opening, list) or len(opening) > MAX_PRIMER_TOKENS:
                raise ValueError(f"each opening must be a list of at most {MAX_PRIMER_TOKENS} token ids")
            if not all(type(token) is int and 0 <= token < vocabulary_size for token in opening):
                raise ValueError("an opening holds a token id the vocabulary does not have")
    return fingerprint, names, openings


def check_history(data: object) -> list[dict]:
    """The epochs of history.json, each exactly the fields of an EpochReport."""
    with _reasons("history.json"):
        if not isinstance(data, list) or len(data) > EPOCH_RANGE[1]:
            raise ValueError(f"the history must be a list of at most {EPOCH_RANGE[1]} epochs")
        return [_check_epoch(entry) for entry in data]


def _check_epoch(entry: object) -> dict:
    _check_keys(entry, {field.name for field in fields(EpochReport)})
    for name in ("epoch", "epochs"):
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, int) or not EPOCH_RANGE[0] <= value <= EPOCH_RANGE[1]:
            raise ValueError(f"each epoch's {name} must be a whole number in range {EPOCH_RANGE[0]}..{EPOCH_RANGE[1]}")
    validation_loss = entry["validation_loss"]
    return {
        "epoch": entry["epoch"],
        "epochs": entry["epochs"],
        "loss": _finite(entry["loss"], "loss"),
        "validation_loss": None if validation_loss is None else _finite(validation_loss, "validation_loss"),
        "seconds": _finite(entry["seconds"], "seconds"),
    }


def check_evaluation(data: object) -> EvaluationFigures:
    """The weights digest and recommended temperatures of evaluation.json (other figures may be there)."""
    with _reasons("evaluation.json"):
        if not isinstance(data, dict) or not {"weights_sha256", "recommended_temperatures"} <= set(data):
            raise ValueError("it must have the fields weights_sha256 and recommended_temperatures")
        digest, recommended = data["weights_sha256"], data["recommended_temperatures"]
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ValueError("weights_sha256 must be 64 hexadecimal digits")
        if recommended is not None:
            recommended = _check_temperatures(recommended)
    return EvaluationFigures(digest, recommended)


def _check_temperatures(value: object) -> tuple[float, float]:
    low_limit, high_limit = TEMPERATURE_RANGE
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("the recommended temperatures must be two numbers")
    low, high = (_finite(number, "recommended temperature") for number in value)
    if not low_limit <= low <= high <= high_limit:
        raise ValueError(f"the recommended temperatures must be in order within {low_limit}..{high_limit}")
    return low, high


def _finite(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"each {name} must be a finite number")
    return float(value)


def _check_keys(data: object, required: set[str], optional: set[str] = frozenset()) -> None:
    if not isinstance(data, dict):
        raise ValueError("it holds the wrong kind of data")
    missing, unknown = sorted(required - set(data)), sorted(set(data) - required - optional)
    if missing:
        raise ValueError(f"it lacks the field {missing[0]}")
    if unknown:
        raise ValueError(f"it has a field {_short(unknown[0], 40)!r}, which musicgen does not write")


@contextmanager
def _reasons(name: str) -> Iterator[None]:
    """Our own ValueErrors become a BundleError naming the file; anything else says only that it is damaged."""
    try:
        yield
    except ValueError as error:
        raise BundleError(f"the model's {name} is damaged or from another program: {_short(str(error))}") from None
    except (TypeError, KeyError, AttributeError, IndexError):
        raise BundleError(f"the model's {name} is damaged or from another program") from None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 1_000_000 else f"{size / 1e3:.0f} kB"


# --- the weights file ---------------------------------------------------------------------


def weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Path and shape of every float32 array in the weights file Keras writes for this model."""
    vocabulary, units, inputs = config.vocabulary_size, config.units, config.embedding_size
    shapes = {"layers/embedding/vars/0": (vocabulary, inputs)}
    for layer in range(config.layers):
        cell = f"layers/{_numbered('lstm', layer)}/cell/vars"
        shapes |= {f"{cell}/0": (inputs, 4 * units), f"{cell}/1": (units, 4 * units), f"{cell}/2": (4 * units,)}
        inputs = units
    return shapes | {"layers/dense/vars/0": (units, vocabulary), "layers/dense/vars/1": (vocabulary,)}


def weight_groups(config: ModelConfig) -> list[str]:
    """Every group the weights file may have: those holding the arrays and the empty ones Keras writes."""
    empty = ["vars", "layers/input_layer/vars"]
    for layer in range(config.layers):
        empty += [f"layers/{_numbered('lstm', layer)}/vars", f"layers/{_numbered('dropout', layer)}/vars"]
    paths = [path.rsplit("/", 1)[0] for path in weight_shapes(config)] + empty
    return sorted({"/".join(path.split("/")[:depth]) for path in paths for depth in range(path.count("/") + 2)})


def parameter_count(config: ModelConfig) -> int:
    """Number of weights of the model."""
    return sum(math.prod(shape) for shape in weight_shapes(config).values())


def weights_byte_limit(config: ModelConfig) -> int:
    """The largest weights file this model can have: 4 bytes a weight and the HDF5 headers."""
    return 4 * parameter_count(config) + WEIGHTS_SLACK_BYTES


def _numbered(name: str, index: int) -> str:
    """Keras's names in the file: lstm, lstm_1, lstm_2..."""
    return name if index == 0 else f"{name}_{index}"


_passed: OrderedDict[tuple[str, str], None] = OrderedDict()  # (sha256, layout) of weights that passed
_passed_lock = threading.Lock()


def inspect_weights(data: bytes, config: ModelConfig) -> None:
    """Check a weights file against the settings in a child process; BundleError when it does not fit.

    Passing files are remembered by their digest, so loading a model just unpacked does not inspect it twice.
    """
    layout = json.dumps({"arrays": weight_shapes(config), "groups": weight_groups(config)})
    key = (hashlib.sha256(data).hexdigest(), layout)
    with _passed_lock:
        if key in _passed:
            _passed.move_to_end(key)
            return
    problem = _run_inspection(data, layout)
    if problem is not None:
        raise BundleError(problem)
    with _passed_lock:
        _passed[key] = None
        while len(_passed) > 64:
            _passed.popitem(last=False)


_inspections = threading.BoundedSemaphore(1)  # one child at a time (~150 MB each); one takes ~0.1 s


def _run_inspection(data: bytes, layout: str) -> str | None:
    with _inspections:
        return _inspect_in_child(data, layout)


def _inspect_in_child(data: bytes, layout: str) -> str | None:
    root = str(Path(__file__).resolve().parents[1])  # isolated mode (-I) leaves the project off sys.path
    code = f"import sys; sys.path.insert(0, {root!r}); import musicgen.boundary as b; b.inspect_in_child()"
    environment = os.environ | {"OPENBLAS_NUM_THREADS": "1", "HDF5_PLUGIN_PRELOAD": "::"}  # "::" loads no plugins
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", code, layout],
            input=data,
            capture_output=True,
            timeout=INSPECTION_SECONDS,
            env=environment,
        )
    except subprocess.TimeoutExpired:
        return DAMAGED_WEIGHTS + " (reading it took too long)"
    except OSError as error:
        log.error("cannot start the weights inspection: %s", error)
        return "the model's weights could not be checked on this server just now; try again later"
    return _verdict(done)


def _verdict(done: subprocess.CompletedProcess) -> str | None:
    """The child's answer: None when the file passed, else a plain sentence; a crash means a damaged file."""
    lines = done.stdout.decode(errors="replace").splitlines()
    try:
        verdict = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except ValueError:
        verdict = None
    if isinstance(verdict, dict) and isinstance(verdict.get("problem", ...), str | None):
        return verdict["problem"]
    details = done.stderr[-2000:].decode(errors="replace")
    log.info("the weights inspection failed (exit status %s): %s", done.returncode, details)
    return DAMAGED_WEIGHTS


def inspect_in_child() -> None:
    """The child process: weights on stdin, layout in argv[1]; prints {"problem": sentence or null}."""
    import resource

    for kind, limit in ((resource.RLIMIT_AS, INSPECTION_MEMORY_BYTES), (resource.RLIMIT_CPU, INSPECTION_SECONDS)):
        _, hard = resource.getrlimit(kind)
        limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(kind, (limit, limit))
    import h5py

    layout = json.loads(sys.argv[1])
    arrays = {path: tuple(shape) for path, shape in layout["arrays"].items()}
    with h5py.File(io.BytesIO(sys.stdin.buffer.read()), "r") as weights:
        problem = _weights_problem(weights, arrays, set(layout["groups"]))
    print(json.dumps({"problem": problem}))


def _weights_problem(weights, arrays: dict[str, tuple[int, ...]], groups: set[str]) -> str | None:
    found: set[str] = set()
    problem = _tree_problem(weights, "", arrays, groups, found)
    missing = sorted(set(arrays) - found)
    if problem is None and missing:
        problem = f"the model's weights do not fit its settings: the weights file has no {missing[0]}"
    return problem or _values_problem(weights, arrays)


def _tree_problem(group, path: str, arrays: dict, groups: set[str], found: set[str]) -> str | None:
    """Walk the file from `group`: only expected names, reached by hard links, arrays and groups in their places."""
    expected = {name for name in [*arrays, *groups] if name and name.rpartition("/")[0] == path}
    if len(group) > len(expected):
        return "the model's weights do not fit its settings: the weights file has parts these settings do not have"
    problem = _attributes_problem(group, {"name"} if path.endswith("vars") else set())
    for name in group:
        if problem is not None:
            break
        child = f"{path}/{name}" if path else name
        problem = _member_problem(group, name, child, expected, arrays, groups, found)
    return problem


def _member_problem(group, name: str, child: str, expected: set[str], arrays, groups, found) -> str | None:
    import h5py

    if child not in expected:
        return f"the model's weights do not fit its settings: the weights file has {child}, which they do not"
    if not isinstance(group.get(name, getlink=True), h5py.HardLink):  # before following it anywhere
        return "the model's weights file links to other places, which musicgen never writes"
    item = group[name]
    if child in arrays:
        found.add(child)
        return _array_problem(item, child, arrays[child])
    if not isinstance(item, h5py.Group):
        return f"the model's weights do not fit its settings: {child} should be a group"
    return _tree_problem(item, child, arrays, groups, found)


def _attributes_problem(item, allowed: set[str]) -> str | None:
    if len(item.attrs) > len(allowed) or not set(item.attrs) <= allowed:
        return "the model's weights file carries extra information that musicgen never writes"
    return None


def _array_problem(item, path: str, shape: tuple[int, ...]) -> str | None:
    """One array: exactly the expected shape, float32, stored in this file without filters."""
    import h5py

    if not isinstance(item, h5py.Dataset):
        return f"the model's weights do not fit its settings: {path} should be an array"
    if item.shape != shape:
        return _shape_problem(path, item.shape, shape)
    if item.dtype != np.dtype("<f4"):
        return f"the model's weights are stored as {item.dtype}, not as the 32-bit floats musicgen writes"
    plist = item.id.get_create_plist()
    if plist.get_external_count() or item.is_virtual or plist.get_layout() == h5py.h5d.VIRTUAL:
        return "the model's weights file keeps numbers in other files, which musicgen never does"
    if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED) or plist.get_nfilters():
        return "the model's weights file stores its numbers in a way musicgen never writes"
    if item.chunks is not None and any(chunk > size for chunk, size in zip(item.chunks, shape, strict=True)):
        return "the model's weights file stores its numbers in a way musicgen never writes"
    return _attributes_problem(item, set())


_VOCABULARY_AXIS = {"layers/embedding/vars/0": 0, "layers/dense/vars/0": 1, "layers/dense/vars/1": 0}


def _shape_problem(path: str, found: tuple[int, ...] | None, expected: tuple[int, ...]) -> str:
    """The mismatch in plain words; one that is only in the number of tokens says so."""
    axis = _VOCABULARY_AXIS.get(path)
    differ = [a != b for a, b in zip(found or (), expected, strict=False)]
    if axis is not None and len(found or ()) == len(expected) and differ.count(True) == 1 and differ[axis]:
        return (
            f"the model's weights were trained with {found[axis]} tokens but its vocabulary has {expected[axis]}: "
            "the weights and the vocabulary come from different models"
        )
    return f"the model's weights do not fit its settings: {path} has the shape {found}, they say {expected}"


def _values_problem(weights, arrays: dict) -> str | None:
    """Read every array in full (the shapes bound the memory) and refuse NaN and infinite weights."""
    for path in arrays:
        if not np.isfinite(weights[path][()]).all():
            return "the model's weights contain numbers that are not finite: its training went wrong"
    return None
