"""Speed of `midi.read` against mido's parsing, on the biggest files an upload may hold.

    .venv/bin/python -m benchmarks.midi_read_speed [--runs 3]

Four files near MAX_FILE_BYTES are built in memory with mido: dense controller changes
(read), 200,000 notes (read), 666,000 note-ons (refused at MAX_NOTES) and a million
one-byte aftertouch events (refused at MAX_EVENTS). `midi.read` runs `--runs` times on
each (best run shown); `mido.MidiFile` parses the same bytes once, as the old `midi.read`
did before checking anything (building the score from mido's messages came on top).
The target is under 1 s for every file on the hosted 2 cores.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable

import mido

from musicgen import midi

TARGET_SECONDS = 1.0


def file_of(*tracks: list[mido.Message]) -> bytes:
    """A format-1 file at 480 ticks per beat, one list of messages per track."""
    midi_file = mido.MidiFile(type=1, ticks_per_beat=480)
    midi_file.tracks += [mido.MidiTrack(messages) for messages in tracks]
    buffer = io.BytesIO()
    midi_file.save(file=buffer)
    return buffer.getvalue()


def melody(count: int, ticks: int = 240) -> list[mido.Message]:
    """`count` notes, one after another, a note-on with velocity 0 ending each (running status: 6 bytes a note)."""
    messages = []
    for i in range(count):
        pitch = 48 + (i * 7) % 36
        messages.append(mido.Message("note_on", note=pitch, velocity=80))
        messages.append(mido.Message("note_on", note=pitch, velocity=0, time=ticks))
    return messages


def dense_controllers() -> bytes:
    """666,000 modulation-wheel changes a tick apart (3 bytes each) beside a melody of 64 notes."""
    wheel = [mido.Message("control_change", control=1, value=i % 128, time=1) for i in range(666_000)]
    return file_of(wheel, melody(64))


def dense_note_ons() -> bytes:
    """666,000 note-ons a tick apart, cycling over 48 pitches, never released (3 bytes each)."""
    return file_of([mido.Message("note_on", note=36 + i % 48, velocity=64, time=1) for i in range(666_000)])


def dense_aftertouch() -> bytes:
    """999,000 channel-pressure events (2 bytes each: a delta and one data byte) and one note."""
    pressure = [mido.Message("aftertouch", value=i % 128) for i in range(999_000)]
    return file_of([*melody(1), *pressure])


def best_seconds(action: Callable[[], object], runs: int) -> tuple[float, object]:
    """Fastest of `runs` calls, in seconds, and what the last one returned."""
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        best = min(best, time.perf_counter() - started)
    return best, result


def read_or_refuse(data: bytes) -> str:
    """What `midi.read` made of the file, in a few words."""
    try:
        return f"{len(midi.read(data).notes):,} notes"
    except midi.MidiError as error:
        return f"refused: {error}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of midi.read per file (best shown)")
    runs = parser.parse_args().runs
    print(f"load average before the run: {os.getloadavg()[0]:.2f} (other jobs share the CPU)")
    files = {
        "dense controllers": dense_controllers(),
        "200,000 notes": file_of(melody(200_000, ticks=10)),
        "666,000 note-ons": dense_note_ons(),
        "999,000 aftertouch": dense_aftertouch(),
    }
    ours_total = mido_total = slowest = 0.0
    for name, data in files.items():
        ours, outcome = best_seconds(lambda data=data: read_or_refuse(data), runs)
        theirs, _ = best_seconds(lambda data=data: mido.MidiFile(file=io.BytesIO(data)), 1)
        print(f"{name}, {len(data) / 1e6:.2f} MB, {outcome}")
        print(f"  midi.read {ours:.3f} s, mido.MidiFile {theirs:.2f} s: {theirs / ours:,.0f}x faster")
        ours_total, mido_total, slowest = ours_total + ours, mido_total + theirs, max(slowest, ours)
    verdict = "under" if slowest < TARGET_SECONDS else "OVER"
    print(f"slowest midi.read {slowest:.3f} s, {verdict} the {TARGET_SECONDS:g} s target")
    ratio = mido_total / ours_total
    print(f"all files: midi.read {ours_total:.2f} s, mido.MidiFile {mido_total:.1f} s: {ratio:,.0f}x faster")


if __name__ == "__main__":
    main()
