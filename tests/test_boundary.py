"""Hostile model uploads and folders: each is refused with one BundleError and leaves nothing on disk.

The zips and weights files are built here, in memory or in tmp_path, from a tiny model trained for real.
"""

import io
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from musicgen import boundary
from musicgen.boundary import MAX_JSON_DEPTH, MAX_ZIP_ENTRIES, BundleError, json_depth
from musicgen.bundle import (
    BUNDLE_FILES,
    bundle_to_zip,
    describe_bundle,
    load_bundle,
    read_history,
    read_model_zip,
    write_bundle_files,
    zip_to_bundle,
)
from musicgen.tokens import Vocabulary
from tests.conftest import TINY_MODEL

VOCABULARY = Vocabulary()
EMBEDDING = "layers/embedding/vars/0"
DENSE_BIAS = "layers/dense/vars/1"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "bach"


@pytest.fixture(scope="module")
def good_files(run_dir) -> dict[str, bytes]:
    files = {name: (run_dir / name).read_bytes() for name in BUNDLE_FILES if (run_dir / name).exists()}
    evaluation = {"weights_sha256": "ab" * 32, "recommended_temperatures": [0.6, 1.0], "lstm": {"nll": 1.2}}
    return files | {"evaluation.json": json.dumps(evaluation).encode()}


def make_zip(files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED, extra_entries=()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name in extra_entries:
            archive.writestr(name, b"")
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def with_json(files: dict[str, bytes], name: str, data) -> dict[str, bytes]:
    return files | {name: json.dumps(data).encode() if not isinstance(data, bytes) else data}


def assert_refused(data: bytes, tmp_path: Path, match: str | None = None) -> BundleError:
    """zip_to_bundle refuses the upload with a BundleError and leaves nothing in the models folder."""
    models = tmp_path / "models"
    with pytest.raises(BundleError, match=match) as refusal:
        zip_to_bundle(data, models / "upload")
    assert not models.exists() or not any(models.iterdir())
    return refusal.value


def patch_entry(data: bytes, name: str, **fields: int) -> bytes:
    """The zip with header fields of one entry changed in both its local and central headers."""
    local = {"flag_bits": 6, "compress_type": 8, "file_size": 22}  # byte offsets in the local header
    central = {"flag_bits": 8, "compress_type": 10, "file_size": 24}  # and in the central directory entry
    formats = {"flag_bits": "<H", "compress_type": "<H", "file_size": "<L"}
    patched = bytearray(data)
    entry = zipfile.ZipFile(io.BytesIO(data)).getinfo(name)
    directory = _central_entry(data, name)
    for field, value in fields.items():
        struct.pack_into(formats[field], patched, entry.header_offset + local[field], value)
        struct.pack_into(formats[field], patched, directory + central[field], value)
    return bytes(patched)


def _central_entry(data: bytes, name: str) -> int:
    position = data.rindex(b"PK\x05\x06")
    offset = struct.unpack_from("<L", data, position + 16)[0]
    while data[offset : offset + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = struct.unpack_from("<3H", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_length] == name.encode():
            return offset
        offset += 46 + name_length + extra_length + comment_length
    raise KeyError(name)


def edited_weights(run_dir: Path, tmp_path: Path, edit) -> bytes:
    """The tiny model's weights file after `edit(h5py.File)`."""
    path = tmp_path / "edited.weights.h5"
    shutil.copy(run_dir / "model.weights.h5", path)
    with h5py.File(path, "r+") as weights:
        edit(weights)
    return path.read_bytes()


def replace_dataset(weights, path: str, **create) -> None:
    del weights[path]
    weights.create_dataset(path, **create)


def peak_memory_of(call) -> int:
    """Bytes allocated at the peak of `call()` (numpy and bytes objects included), whatever it raises."""
    tracemalloc.start()
    try:
        call()
    except BundleError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# --- the weights file ---------------------------------------------------------------------


def test_a_dataset_declaring_512_mib_is_refused_before_anything_reads_it(run_dir, good_files, tmp_path):
    recurrent = "layers/lstm/cell/vars/1"
    huge = edited_weights(run_dir, tmp_path, lambda w: replace_dataset(w, recurrent, shape=(2**27,), dtype="f4"))
    assert len(huge) < 100_000  # the 512 MiB are declared, not stored
    data = make_zip(good_files | {"model.weights.h5": huge})
    peak = peak_memory_of(lambda: zip_to_bundle(data, tmp_path / "models" / "upload"))
    assert peak < 50_000_000
    assert_refused(data, tmp_path, match=r"layers/lstm/cell/vars/1 has the shape \(134217728,\)")


def test_an_external_dataset_never_hands_back_a_server_file(run_dir, good_files, tmp_path):
    secret = tmp_path / "secret.bin"
    rows, columns = len(VOCABULARY), TINY_MODEL["embedding_size"]
    secret.write_bytes(np.arange(rows * columns, dtype="<f4").tobytes())

    def point_outside(weights):
        replace_dataset(
            weights, EMBEDDING, shape=(rows, columns), dtype="f4", external=[(str(secret), 0, rows * columns * 4)]
        )

    data = make_zip(good_files | {"model.weights.h5": edited_weights(run_dir, tmp_path, point_outside)})
    assert_refused(data, tmp_path, match="keeps numbers in other files")
    with pytest.raises(BundleError, match="keeps numbers in other files"):
        read_model_zip(data)


def test_a_virtual_dataset_is_refused(run_dir, good_files, tmp_path):
    with h5py.File(tmp_path / "source.h5", "w") as source:
        source["data"] = np.ones(len(VOCABULARY), "f4")

    def virtual(weights):
        layout = h5py.VirtualLayout(shape=(len(VOCABULARY),), dtype="f4")
        layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "data", shape=(len(VOCABULARY),))
        del weights[DENSE_BIAS]
        weights.create_virtual_dataset(DENSE_BIAS, layout)

    data = make_zip(good_files | {"model.weights.h5": edited_weights(run_dir, tmp_path, virtual)})
    assert_refused(data, tmp_path, match="keeps numbers in other files")


@pytest.mark.parametrize(
    "link",
    [lambda tmp_path: h5py.SoftLink("/" + EMBEDDING), lambda tmp_path: h5py.ExternalLink(str(tmp_path / "x.h5"), "/d")],
    ids=["soft", "external"],
)
def test_links_are_refused(run_dir, good_files, tmp_path, link):
    with h5py.File(tmp_path / "x.h5", "w") as other:
        other["d"] = np.ones(len(VOCABULARY), "f4")

    def add_link(weights):
        del weights[DENSE_BIAS]
        weights[DENSE_BIAS] = link(tmp_path)

    data = make_zip(good_files | {"model.weights.h5": edited_weights(run_dir, tmp_path, add_link)})
    assert_refused(data, tmp_path, match="links to other places")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda w: replace_dataset(w, DENSE_BIAS, data=np.zeros(len(VOCABULARY), "f8")), "not as the 32-bit floats"),
        (lambda w: replace_dataset(w, EMBEDDING, data=np.float32(1.0)), r"vars/0 has the shape \(\)"),
        (lambda w: (w.__delitem__(EMBEDDING), w.create_group(EMBEDDING)), "should be an array"),
        (lambda w: w.create_dataset("extra", data=[1.0]), "parts these settings do not have"),
        (lambda w: w.move("layers/dense", "layers/dense_1"), "has layers/dense_1, which they do not"),
        (lambda w: w[EMBEDDING].attrs.create("dtype", "bfloat16"), "extra information"),
        (lambda w: replace_dataset(w, DENSE_BIAS, data=np.ones(len(VOCABULARY), "f4"), compression="gzip"), "a way"),
        (lambda w: w[DENSE_BIAS].write_direct(np.full(len(VOCABULARY), np.nan, "f4")), "not finite"),
        (lambda w: w.__delitem__(DENSE_BIAS), "has no layers/dense/vars/1"),
    ],
    ids=[
        "float64",
        "scalar-embedding",
        "group-embedding",
        "extra-object",
        "renamed",
        "attribute",
        "gzip",
        "nan",
        "missing",
    ],
)
def test_weights_that_are_not_exactly_what_musicgen_writes_are_refused(run_dir, good_files, tmp_path, edit, match):
    data = make_zip(good_files | {"model.weights.h5": edited_weights(run_dir, tmp_path, edit)})
    assert_refused(data, tmp_path, match=match)


def test_weights_that_are_not_hdf5_are_refused(good_files, tmp_path):
    assert_refused(make_zip(good_files | {"model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 500}), tmp_path)


# --- the zip ------------------------------------------------------------------------------


def test_a_member_whose_header_lies_about_its_size_is_never_inflated_beyond_it(good_files, tmp_path):
    honest = make_zip(good_files | {"history.json": b" " * 64_000_000})
    data = patch_entry(honest, "history.json", file_size=1000)
    assert len(data) < 1_000_000
    peak = peak_memory_of(lambda: zip_to_bundle(data, tmp_path / "models" / "upload"))
    assert peak < 20_000_000
    assert_refused(data, tmp_path, match="history.json cannot be unpacked")


def test_an_inflated_member_larger_than_its_limit_is_refused(good_files, tmp_path):
    assert_refused(make_zip(good_files | {"config.json": b" " * 2_000_000}), tmp_path, match="larger than 1 MB")


def test_many_directory_entries_are_refused_from_the_end_record(good_files, tmp_path):
    folders = [f"folder{i}/" for i in range(MAX_ZIP_ENTRIES)]
    assert_refused(make_zip(good_files, extra_entries=folders), tmp_path, match="too many files")


def test_an_end_record_that_understates_the_entries_is_caught_after_parsing(good_files, tmp_path):
    data = bytearray(make_zip(good_files, extra_entries=[f"folder{i}/" for i in range(MAX_ZIP_ENTRIES)]))
    end = data.rindex(b"PK\x05\x06")
    struct.pack_into("<2H", data, end + 8, 6, 6)
    assert_refused(bytes(data), tmp_path, match="too many files")


def test_a_central_directory_over_64_kb_and_zip64_are_refused(good_files, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        note = zipfile.ZipInfo("notes.txt")
        note.comment = b"x" * 65_000
        archive.writestr(note, b"")
        for name, data in good_files.items():
            archive.writestr(name, data)
    assert_refused(buffer.getvalue(), tmp_path, match="too many files")
    data = bytearray(make_zip(good_files))
    struct.pack_into("<2H", data, data.rindex(b"PK\x05\x06") + 8, 0xFFFF, 0xFFFF)
    assert_refused(bytes(data), tmp_path, match="Zip64")


def test_encrypted_and_zstd_entries_and_repeated_names_are_refused(good_files, tmp_path):
    data = make_zip(good_files)
    assert_refused(patch_entry(data, "config.json", flag_bits=0x1), tmp_path, match="encrypted")
    assert_refused(patch_entry(data, "config.json", compress_type=93), tmp_path, match="compressed in a way")
    with pytest.warns(UserWarning, match="Duplicate name"):
        twice = make_zip(good_files, extra_entries=["config.json"])
    assert_refused(twice, tmp_path, match="same file name twice")


def test_a_zip_with_a_comment_and_ignored_entries_is_read(good_files):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.comment = b"made by hand"
        archive.writestr("__MACOSX/._config.json", b"junk")
        for name, data in good_files.items():
            archive.writestr(name, data)
    assert read_model_zip(buffer.getvalue()) == good_files


def test_a_model_with_too_many_weights_is_refused(good_files, tmp_path):
    with pytest.raises(BundleError, match="musicgen opens models of up to 1,000"):
        read_model_zip(make_zip(good_files), max_parameters=1000)


# --- the JSON files -----------------------------------------------------------------------


def config_with(good_files, **changes) -> dict:
    return json.loads(good_files["config.json"]) | changes


@pytest.mark.parametrize(
    "name, data, match",
    [
        ("corpus.json", {"fingerprint": "0" * 64, "files": ["x" * 200 + str(i) for i in range(10_000)]}, "larger than"),
        ("corpus.json", {"fingerprint": "0" * 64, "files": [f"f{i}" for i in range(10_001)]}, "at most 10,000"),
        ("corpus.json", {"fingerprint": "not hex", "files": []}, "hexadecimal"),
        ("corpus.json", {"fingerprint": "0" * 64, "files": [], "openings": [[1, 9]] * 17}, "at most 16"),
        ("corpus.json", {"fingerprint": "0" * 64, "files": [], "openings": [[1] * 513]}, "at most 512 token ids"),
        ("corpus.json", {"fingerprint": "0" * 64, "files": [], "openings": [[1, 10**9]]}, "does not have"),
        ("corpus.json", {"fingerprint": "0" * 64, "files": [], "openings": [[1, True, 2.0]]}, "does not have"),
        ("corpus.json", {"fingerprint": "0" * 64, "files": [], "openings": {"a": 1}}, "list of at most 16"),
        ("config.json", "deep", "nested more than 32 levels"),
        ("config.json", {"train": [1, 2]}, "training settings must be a set of named values"),
        ("config.json", {"model": {"units": 4}}, "exactly the fields"),
        ("config.json", {"musicgen_version": "x" * 41}, "at most 40 characters"),
        ("config.json", b'{"model": {"dropout": NaN}}', "not valid JSON"),
        ("config.json", b'{"model": 1e999}', "not valid JSON"),
        (
            "history.json",
            [{"epochs": 1, "loss": 1.0, "validation_loss": None, "seconds": 1.0}],
            "lacks the field epoch",
        ),
        ("history.json", [1.0, 2.0], "wrong kind of data"),
        ("history.json", b"not json", "not valid JSON"),
        ("history.json", [{"epoch": 0, "epochs": 1, "loss": 1.0, "validation_loss": None, "seconds": 1}], "1..1000"),
        ("vocabulary.json", {"config": {"evil": 1}, "names": []}, "has a field .evil."),
        (
            "evaluation.json",
            b'{"weights_sha256": "' + b"ab" * 32 + b'", "recommended_temperatures": [NaN, NaN]}',
            "JSON",
        ),
        ("evaluation.json", {"weights_sha256": "ab" * 32, "recommended_temperatures": [1.0, 0.5]}, "in order"),
    ],
    ids=[
        "corpus-2-MB",
        "corpus-10001-files",
        "corpus-fingerprint",
        "corpus-17-openings",
        "corpus-long-opening",
        "corpus-opening-unknown-id",
        "corpus-opening-not-ids",
        "corpus-openings-dict",
        "config-100000-deep",
        "config-train-list",
        "config-model-fields",
        "config-long-version",
        "config-nan",
        "config-infinite",
        "history-no-epoch",
        "history-numbers",
        "history-not-json",
        "history-epoch-0",
        "vocabulary-fields",
        "evaluation-nan",
        "evaluation-reversed",
    ],
)
def test_json_files_that_musicgen_did_not_write_are_refused(good_files, tmp_path, name, data, match):
    if data == "deep":
        data = b'{"model": 1, "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    elif name == "config.json" and isinstance(data, dict):
        data = config_with(good_files, **data)
    assert_refused(make_zip(with_json(good_files, name, data)), tmp_path, match=match)


def test_missing_files_are_named(good_files, tmp_path):
    files = {name: data for name, data in good_files.items() if name != "corpus.json"}
    assert_refused(make_zip(files), tmp_path, match="corpus.json is missing")


def test_the_depth_scan_skips_strings():
    assert json_depth(b'["[[[[\\"[", {"a": "]]]{{{"}]') == 2
    assert json_depth(b"[" * (MAX_JSON_DEPTH + 1)) == MAX_JSON_DEPTH + 1
    assert json_depth(b'"no brackets"') == 0


def test_a_damaged_history_in_a_folder_is_a_bundle_error(run_dir, tmp_path):
    folder = shutil.copytree(run_dir, tmp_path / "copy")
    (folder / "history.json").write_text('[{"loss": 1}]')
    for read in (read_history, load_bundle, describe_bundle):
        with pytest.raises(BundleError, match="history.json"):
            read(folder)


# --- writing and describing -----------------------------------------------------------------


def test_written_files_appear_all_at_once_or_not_at_all(good_files, tmp_path):
    write_bundle_files(good_files, tmp_path / "models" / "one")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["one"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "models" / "one").iterdir()} == good_files
    with pytest.raises(OSError):
        write_bundle_files(good_files, tmp_path / "models" / "one")  # not empty
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["one"]


def test_describe_reads_without_tensorflow_and_again_only_after_a_change(run_dir, tmp_path):
    code = "import sys, musicgen.bundle; print(sorted({'tensorflow', 'keras', 'h5py'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=SHIPPED_MODEL.parents[1])
    assert done.stdout.strip() == "[]"
    folder = shutil.copytree(run_dir, tmp_path / "copy")
    first = describe_bundle(folder)
    assert describe_bundle(folder) is first
    assert (first.file_count, len(first.history), first.best_epoch) == (1, 1, first.history[0])
    history = json.loads((folder / "history.json").read_text())
    (folder / "history.json").write_text(json.dumps(history + [history[0] | {"epoch": 2, "loss": 0.5}]))
    assert len(describe_bundle(folder).history) == 2


def test_the_shipped_model_passes_every_check():
    description = describe_bundle(SHIPPED_MODEL)
    assert (description.model_config.units, description.file_count) == (256, 348)
    assert set(read_model_zip(bundle_to_zip(SHIPPED_MODEL))) == set(BUNDLE_FILES)
    assert boundary.parameter_count(description.model_config) == 914_043


# --- any bytes at all -----------------------------------------------------------------------


def only_bundle_errors(data: bytes) -> None:
    """zip_to_bundle either loads the upload or raises BundleError, leaving nothing behind."""
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "models" / "upload"
        try:
            zip_to_bundle(data, folder)
            event("loaded")
        except BundleError as error:
            event(str(error)[:70])
            assert str(error) and "\n" not in str(error)
            assert not folder.exists() and not any((Path(root) / "models").glob("*"))


@pytest.fixture(scope="module")
def good_zip(good_files) -> bytes:
    return make_zip(good_files)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_changed_bytes_of_a_zip_give_a_bundle_error_or_a_model(good_zip, data):
    headers = len(good_zip) - good_zip.rindex(b"PK\x01\x02", 0, good_zip.rindex(b"PK\x05\x06")) + 2000
    position = st.one_of(st.integers(0, len(good_zip) - 1), st.integers(len(good_zip) - headers, len(good_zip) - 1))
    changes = data.draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=6))
    mutated = bytearray(good_zip)
    for index, value in changes:
        mutated[index] = value
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(good_zip))))
    only_bundle_errors(bytes(mutated[:cut]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_changed_bytes_of_the_weights_give_a_bundle_error_or_a_model(good_files, data):
    weights = good_files["model.weights.h5"]
    position = st.one_of(st.integers(0, 4095), st.integers(0, len(weights) - 1))
    changes = data.draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=4))
    mutated = bytearray(weights)
    for index, value in changes:
        mutated[index] = value
    only_bundle_errors(make_zip(good_files | {"model.weights.h5": bytes(mutated)}, zipfile.ZIP_STORED))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_changed_json_value_gives_a_bundle_error_or_a_model(good_files, data):
    name = data.draw(st.sampled_from(boundary.JSON_FILES))
    document = json.loads(good_files[name])
    parent, key = None, None
    node = document
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        parent = node
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
        node = node[key]
    value = data.draw(JSON_VALUES)
    if parent is None:
        document = value
    elif isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = value
    text = json.dumps(document).encode()  # NaN and Infinity too
    only_bundle_errors(make_zip(good_files | {name: text}))


def test_a_megabyte_of_escaped_quotes_is_measured_in_linear_time():
    """Found by review: a regex for strings backtracked quadratically (30 minutes for 1 MB, interpreter lock held).
    The same input 100x shorter must not take 10,000x longer: counted in steps, not timed."""
    assert json_depth(b'\\"' * 500_000) == 0
    assert json_depth(b'["\\\\", [[1]]]') == 3  # an escaped backslash does not escape the quote after it
