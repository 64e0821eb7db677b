"""Token shards for large corpora: each MIDI file parsed once, in parallel processes, and streamed to training.

A shard holds the token ids of one file as raw little-endian int32, beside a small JSON
record of its report. Both are named by a digest of the file's bytes and the vocabulary,
so a re-run, or a second worker sharing the folder, skips every file parsed before, and a
damaged file is parsed (and reported) once per run, never once per worker or per epoch.
Training reads the shards with tf.data a few files at a time: memory holds a shuffle
buffer of windows, not the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from musicgen import corpus, tokens

CACHE_VERSION = 1  # part of every shard's name: a new token format makes new shards
SHUFFLE_WINDOWS = 2048  # windows held in tf.data's shuffle buffer (2048 x 129 tokens x 4 bytes = 1 MB)
FILES_PER_BLOCK = 16  # files concatenated before windows are cut, so short pieces still make windows


@dataclass(frozen=True)
class Shard:
    """One used file of the corpus and where its tokens are."""

    name: str  # the file's name, as corpus.load_paths names it
    path: Path  # raw int32 token ids
    token_count: int


@dataclass(frozen=True)
class CachedCorpus:
    """The shards of the usable files, and a report for every file given; held without any tokens."""

    shards: tuple[Shard, ...]  # used files, in the order given
    reports: tuple[corpus.FileReport, ...]  # one per file given, in the order given
    fingerprint: str  # the same as corpus.load_paths would give for these files

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the used files."""
        return tuple(shard.name for shard in self.shards)

    @property
    def token_count(self) -> int:
        """Tokens in all used files."""
        return sum(shard.token_count for shard in self.shards)


def cache_corpus(
    paths: Sequence[Path], cache_dir: Path, vocabulary: tokens.Vocabulary = tokens.Vocabulary(), processes: int = 0
) -> CachedCorpus:
    """Parse the files not cached yet in `processes` processes (0: one per core), then describe them all."""
    cache_dir = Path(cache_dir)
    keys = [shard_key(Path(path).read_bytes(), vocabulary) for path in paths]
    missing = [
        (str(path), key) for path, key in zip(paths, keys, strict=True) if not _record_path(cache_dir, key).exists()
    ]
    if missing:
        _parse_in_processes(missing, cache_dir, vocabulary, processes or os.cpu_count() or 1)
    records = [json.loads(_record_path(cache_dir, key).read_text()) for key in keys]
    return _describe(paths, keys, records, cache_dir)


def shard_key(data: bytes, vocabulary: tokens.Vocabulary) -> str:
    """The name of a file's shard: sha256 of its bytes, then of the vocabulary and the cache version."""
    settings = json.dumps([CACHE_VERSION, vocabulary.to_dict()], sort_keys=True)
    return hashlib.sha256(_content_digest(data).encode() + settings.encode()).hexdigest()


def _content_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.json"


def _tokens_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / key[:2] / f"{key}.tokens"


def _parse_in_processes(missing: list[tuple[str, str]], cache_dir: Path, vocabulary, processes: int) -> None:
    """Write the shard of each (path, key), shared out among fresh Python processes.

    Not multiprocessing: forking would copy TensorFlow's threads, and a spawned child runs the parent's
    __main__ again, which under Streamlit (and its AppTest) is the app's script.
    """
    jobs = [(path, key, str(cache_dir), vocabulary.to_dict()) for path, key in missing]
    if processes == 1 or len(jobs) == 1:
        for job in jobs:
            _parse_one(job)
        return
    code = "import json, sys, musicgen.token_cache as t\nfor job in json.load(sys.stdin): t._parse_one(job)"
    root = str(Path(__file__).resolve().parent.parent)
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    children = [_child(code, environment, json.dumps(jobs[number::processes])) for number in range(processes)]
    if any([child.wait() for child in children]):  # every child waited for
        raise RuntimeError("a process parsing MIDI files into the token cache failed")


def _child(code: str, environment: dict, stdin_text: str) -> subprocess.Popen:
    """A Python process running `code`, given `stdin_text` on its standard input."""
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, env=environment)
    child.stdin.write(stdin_text.encode())
    child.stdin.close()
    return child


def _parse_one(job: tuple[str, str, str, dict]) -> None:
    """Read one file with corpus.load_corpus and write its tokens (when usable) and its report."""
    path, key, cache_dir, vocabulary_data = job
    vocabulary, data = tokens.Vocabulary.from_dict(vocabulary_data), Path(path).read_bytes()
    loaded = corpus.load_corpus([(Path(path).name, data)], vocabulary)
    record = {"report": asdict(loaded.reports[0]), "digest": _content_digest(data), "token_count": 0}
    if loaded.scores:
        ids = corpus.corpus_to_ids(loaded, vocabulary)[0]
        record["token_count"] = len(ids)
        write_atomically(_tokens_path(Path(cache_dir), key), ids.astype("<i4").tobytes())
    write_atomically(_record_path(Path(cache_dir), key), json.dumps(record).encode())  # last: marks it done


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file renamed into place, so a reader never sees half a shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".partial")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    os.replace(temporary, path)


def _describe(paths: Sequence[Path], keys: list[str], records: list[dict], cache_dir: Path) -> CachedCorpus:
    """Shards and reports in the order given; a second file with the same music is skipped, as corpus does."""
    shards, reports, used = [], [], {}  # used: content digest -> name
    for path, key, record in zip(paths, keys, records, strict=True):
        report = corpus.FileReport(**{**record["report"], "name": Path(path).name})
        report = _with_tuples(report)
        if report.error is None and record["digest"] in used:
            report = corpus.FileReport(report.name, error=f"it holds the same music as {used[record['digest']]}")
        if report.error is None:
            used[record["digest"]] = report.name
            shards.append(Shard(report.name, _tokens_path(cache_dir, key), record["token_count"]))
        reports.append(report)
    fingerprint = hashlib.sha256("".join(sorted(used)).encode()).hexdigest()  # as corpus._fingerprint
    return CachedCorpus(tuple(shards), tuple(reports), fingerprint)


def _with_tuples(report: corpus.FileReport) -> corpus.FileReport:
    """JSON gives lists where FileReport holds tuples."""
    return corpus.FileReport(
        **{**asdict(report), "instruments": tuple(report.instruments), "warnings": tuple(report.warnings)}
    )


def read_tokens(shard: Shard) -> np.ndarray:
    """The token ids of one shard, as int32."""
    return np.fromfile(shard.path, dtype="<i4").astype(np.int32)


# --- streaming windows with tf.data ------------------------------------------------------


def windows_dataset(
    shard_paths: Sequence[Path],
    sequence_length: int,
    batch_size: int,
    seed: int,
    shuffle: bool,
    transpose_tables: np.ndarray | None = None,
):
    """Batches of (inputs, targets), each (batch, sequence_length) int32, read from shards as they are needed.

    shuffle=True: the files in a new order each pass, forever (the caller counts steps); windows overlap by
    half, are shuffled in a buffer and come in whole batches, like musicgen.dataset. shuffle=False: one pass,
    windows side by side, the last batch possibly smaller.
    """
    import tensorflow as tf

    files = tf.data.Dataset.from_tensor_slices([str(path) for path in shard_paths])
    if shuffle:
        files = files.shuffle(len(shard_paths), seed=seed, reshuffle_each_iteration=True).repeat()
    stride = max(1, sequence_length // 2) if shuffle else sequence_length
    blocks = files.map(_read_shard, num_parallel_calls=tf.data.AUTOTUNE).ragged_batch(FILES_PER_BLOCK)
    windows = blocks.flat_map(lambda block: _cut_windows(block.flat_values, sequence_length, stride))
    if shuffle:
        windows = windows.shuffle(SHUFFLE_WINDOWS, seed=seed)
    batches = windows.batch(batch_size, drop_remainder=shuffle)
    return batches.map(_split_pair(transpose_tables), num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def _read_shard(path):
    """The token ids in one shard file."""
    import tensorflow as tf

    return tf.io.decode_raw(tf.io.read_file(path), tf.int32, little_endian=True)


def _cut_windows(stream, sequence_length: int, stride: int):
    """Every window of sequence_length + 1 tokens starting at a multiple of stride, as a dataset of rows."""
    import tensorflow as tf

    last_start = tf.shape(stream, out_type=tf.int64)[0] - sequence_length - 1
    starts = tf.range(0, tf.maximum(last_start + 1, 0), stride, dtype=tf.int64)
    rows = tf.gather(stream, starts[:, None] + tf.range(sequence_length + 1, dtype=tf.int64)[None, :])
    return tf.data.Dataset.from_tensor_slices(rows)


def _split_pair(transpose_tables: np.ndarray | None):
    """The map from a batch of windows to (inputs, targets), each window transposed by a random table if given."""
    import tensorflow as tf

    tables = tf.constant(transpose_tables, tf.int32) if transpose_tables is not None else None

    def split(windows):
        if tables is not None:
            choice = tf.random.uniform([tf.shape(windows)[0]], 0, tf.shape(tables)[0], dtype=tf.int32)
            windows = tf.gather(tf.gather(tables, choice), windows, batch_dims=1)
        return windows[:, :-1], windows[:, 1:]

    return split
