"""The token cache: files parsed once in parallel processes, content-addressed shards, windows streamed by tf.data."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from musicgen import corpus, token_cache
from musicgen.tokens import TokenConfig, Vocabulary

ROOT = Path(__file__).resolve().parent.parent
CHORALES = sorted((ROOT / "samples" / "bach").glob("*.mid"))


@pytest.fixture
def music(tmp_path) -> list[Path]:
    """Six chorales, a damaged file and a copy of the first chorale under another name."""
    folder = tmp_path / "music"
    folder.mkdir()
    paths = [Path(shutil.copy(path, folder)) for path in CHORALES[:6]]
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06 not a midi file")
    paths.append(folder / "broken.mid")
    paths.append(Path(shutil.copy(CHORALES[0], folder / "copy.mid")))
    return paths


def test_cached_corpus_matches_the_corpus_module(music, tmp_path):
    cached = token_cache.cache_corpus(music, tmp_path / "cache", processes=2)
    loaded = corpus.load_paths(music)
    assert cached.fingerprint == loaded.fingerprint
    assert cached.names == loaded.names
    assert [report.summary for report in cached.reports] == [report.summary for report in loaded.reports]
    for shard, ids in zip(cached.shards, corpus.corpus_to_ids(loaded, Vocabulary()), strict=True):
        assert np.array_equal(token_cache.read_tokens(shard), ids) and shard.token_count == len(ids)


def test_a_second_run_parses_nothing_and_reports_a_damaged_file_the_same(music, tmp_path):
    first = token_cache.cache_corpus(music, tmp_path / "cache", processes=1)
    written = {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").rglob("*")}
    second = token_cache.cache_corpus(music, tmp_path / "cache", processes=2)
    assert {path: path.stat().st_mtime_ns for path in (tmp_path / "cache").rglob("*")} == written
    assert second == first
    broken = [report for report in second.reports if report.error is not None]
    assert [report.name for report in broken] == ["broken.mid", "copy.mid"]
    assert "same music as" in broken[1].error


def test_shards_are_named_by_content_and_vocabulary(music):
    data = music[0].read_bytes()
    assert token_cache.shard_key(data, Vocabulary()) == token_cache.shard_key(bytes(data), Vocabulary())
    assert token_cache.shard_key(data, Vocabulary()) != token_cache.shard_key(data + b"\0", Vocabulary())
    other = Vocabulary(TokenConfig(velocity_bins=4))
    assert token_cache.shard_key(data, Vocabulary()) != token_cache.shard_key(data, other)


def test_windows_are_cut_from_the_stream_of_the_files(music, tmp_path):
    cached = token_cache.cache_corpus(music[:6], tmp_path / "cache", processes=1)
    stream = np.concatenate([token_cache.read_tokens(shard) for shard in cached.shards])
    text = stream.tobytes()
    paths = [shard.path for shard in cached.shards]
    batches = list(token_cache.windows_dataset(paths, 32, 16, seed=0, shuffle=False))
    assert sum(len(inputs) for inputs, _ in batches) == (len(stream) - 33) // 32 + 1
    for inputs, targets in batches:
        inputs, targets = inputs.numpy(), targets.numpy()
        assert np.array_equal(inputs[:, 1:], targets[:, :-1])
        assert all(
            np.concatenate([row, last[-1:]]).tobytes() in text for row, last in zip(inputs, targets, strict=True)
        )


def test_shuffled_windows_come_in_whole_batches_forever(music, tmp_path):
    cached = token_cache.cache_corpus(music[:6], tmp_path / "cache", processes=1)
    paths = [shard.path for shard in cached.shards]
    one_pass = (cached.token_count - 33) // 16 + 1
    batches = list(token_cache.windows_dataset(paths, 32, 16, seed=0, shuffle=True).take(2 * one_pass // 16 + 4))
    assert all(inputs.shape == (16, 32) and targets.shape == (16, 32) for inputs, targets in batches)
