"""Scaling: training tokens/s on 1, 2 and 3 local workers, and the token cache on a corpus 100x the chorales.

Workers: `musicgen train --workers N --threads-per-worker 1`, each worker holding the same batch
(32 windows of 128 tokens by default, so the global batch grows with N): on this 2-core machine,
2 workers x 1 thread against 1 worker x 1 thread is the honest comparison, and 3 workers show
what oversubscribing the cores costs. Efficiency = tokens/s of N workers / (N x tokens/s of one).

Token cache: the chorales transposed, each half joined to half of another chorale, `--copies` times (every
file's bytes differ, so nothing is deduplicated), written to a temporary folder that is removed
afterwards; then parsed into shards by one process per core (files/s, peak memory of this process
and of the largest parsing process), checked again (every file cached), and one pass of training
windows streamed from the shards (memory before and after).

Run in a quiet window: .venv/bin/python -m benchmarks.scaling [--workers 1 2 3] [--copies 100] [--epochs 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from musicgen import midi, token_cache
from musicgen.score import Note, Score

ROOT = Path(__file__).resolve().parent.parent
CHORALES = sorted((ROOT / "samples" / "bach").glob("*.mid"))


def main() -> None:
    """Print the cache figures, then tokens/s and efficiency per worker count."""
    options = _options()
    sys.stdout.reconfigure(line_buffering=True)  # each figure as soon as it is measured
    with tempfile.TemporaryDirectory(prefix="musicgen-scaling-") as temporary:
        folder = Path(temporary)
        paths = make_large_corpus(folder / "corpus", options.copies)
        measure_cache(paths, folder / "cache")
        speeds = {count: train_speed(count, options, folder) for count in options.workers}
    print(f"{'workers':>7} {'tokens/s':>10} {'speed-up':>9} {'efficiency':>11}")
    for count, speed in speeds.items():
        speed_up = speed / speeds[min(speeds)] * min(speeds)
        print(f"{count:>7} {speed:>10,.0f} {speed_up:>8.2f}x {speed_up / count:>10.0%}")


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--copies", type=int, default=100, help="the chorales this many times over, for the cache")
    parser.add_argument("--epochs", type=int, default=2, help="epochs over the chorales for each worker count")
    parser.add_argument("--batch-per-worker", type=int, default=32)
    return parser.parse_args()


def make_large_corpus(folder: Path, copies: int) -> list[Path]:
    """`copies` x the chorales as MIDI files: copy k of chorale i is the first half of chorale i, then the
    second half of chorale i + k, transposed by k % 12 - 6 semitones."""
    folder.mkdir(parents=True)
    jobs = [(index, copy, str(folder)) for copy in range(copies) for index in range(len(CHORALES))]
    started = time.perf_counter()
    with ProcessPoolExecutor(mp_context=get_context("spawn")) as pool:
        paths = [Path(path) for path in pool.map(_write_variant, jobs, chunksize=256)]
    print(
        f"corpus: {len(paths):,} files, {sum(path.stat().st_size for path in paths) / 1e6:.0f} MB "
        f"written in {time.perf_counter() - started:.0f} s"
    )
    return paths


def _write_variant(job: tuple[int, int, str]) -> str:
    """Write one file of the large corpus, as long as chorale i; its path."""
    index, copy, folder = job
    first, second = _chorale(index), _chorale((index + copy) % len(CHORALES))
    shift, half = copy % 12 - 6, first.end_beat / 2
    head = [_moved(note, shift, 0.0) for note in first.notes if note.start < half]
    tail = [
        _moved(note, shift, half - second.end_beat / 2) for note in second.notes if note.start >= second.end_beat / 2
    ]
    path = Path(folder) / f"{copy:03d}" / CHORALES[index].name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(midi.write(Score(tuple(sorted(head + tail)), first.tempos[:1])))
    return str(path)


@functools.cache
def _chorale(index: int) -> Score:
    """A bundled chorale, read once per process."""
    return midi.read(CHORALES[index])


def _moved(note: Note, semitones: int, beats: float) -> Note:
    """The note transposed (kept within 0..127) and moved later."""
    pitch = min(127, max(0, note.pitch + semitones))
    return Note(note.start + beats, pitch, note.end + beats, note.velocity, note.program, note.is_drum)


def measure_cache(paths: list[Path], cache_dir: Path) -> None:
    """Parse into shards, check again, then stream one pass of windows; print files/s and memory."""
    started = time.perf_counter()
    cached = token_cache.cache_corpus(paths, cache_dir)
    seconds = time.perf_counter() - started
    print(f"cache: {len(paths):,} files, {cached.token_count:,} tokens, {_megabytes(cache_dir):.0f} MB of shards")
    print(f"  parsed in {seconds:.1f} s: {len(paths) / seconds:,.0f} files/s ({_cores()} processes)")
    print(
        f"  peak memory: this process {_peak_mb(resource.RUSAGE_SELF):.0f} MB, "
        f"largest parsing process {_peak_mb(resource.RUSAGE_CHILDREN):.0f} MB"
    )
    started = time.perf_counter()
    token_cache.cache_corpus(paths, cache_dir)
    print(f"  again, all cached: {len(paths) / (time.perf_counter() - started):,.0f} files/s")
    stream_windows(cached)


def stream_windows(cached: token_cache.CachedCorpus) -> None:
    """One pass of training windows from the shards; memory of this process before and after."""
    import tensorflow as tf

    paths = [shard.path for shard in cached.shards]
    dataset = token_cache.windows_dataset(paths, 128, 64, seed=0, shuffle=False)
    tf.constant(0)  # TensorFlow's runtime started before the first reading
    before, started, windows = _current_mb(), time.perf_counter(), 0
    for inputs, _ in dataset:
        windows += int(inputs.shape[0])
    seconds = time.perf_counter() - started
    print(
        f"  streamed {windows:,} windows of 128 tokens in {seconds:.1f} s ({windows * 128 / seconds:,.0f} tokens/s); "
        f"memory {before:.0f} MB before, {_current_mb():.0f} MB after; the corpus as int32 would be "
        f"{cached.token_count * 4 / 1e6:.0f} MB"
    )


def train_speed(workers: int, options: argparse.Namespace, folder: Path) -> float:
    """Tokens/s of all workers together, as the chief reports it, training on the chorales."""
    command = [
        sys.executable, "-m", "musicgen", "train", str(ROOT / "samples" / "bach"),
        "--workers", str(workers), "--threads-per-worker", "1", "--epochs", str(options.epochs),
        "--batch-size", str(options.batch_per_worker * workers), "--validation-share", "0",
        "--checkpoint-steps", "1000000", "--runs", str(folder / f"runs-{workers}"), "--cache", str(folder / "bach"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    found = re.search(r"([\d,]+) tokens/s on", result.stdout)
    if result.returncode or not found:
        raise RuntimeError(f"{workers} workers failed: {result.stderr[-2000:]}")
    speed = float(found.group(1).replace(",", ""))
    print(f"{workers} worker(s) x 1 thread, batch {options.batch_per_worker} each: {speed:,.0f} tokens/s")
    return speed


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _current_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 1e6


def _megabytes(folder: Path) -> float:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6


def _cores() -> int:
    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
