"""Speed and size of `audio.render` against midi2audio's default call, for 30 s of chords.

    python -m benchmarks.render_speed

The piece is four-voice piano chords, one a beat at 100 bpm, built in memory. Both ways
run the same fluidsynth on the same soundfont and MIDI file, taking turns, five times
each; the best run of each is shown. midi2audio's `midi_to_audio` writes a WAV file and
loads every sample of the soundfont; `render` loads only the instruments the piece uses,
checks the samples, encodes them as MP3 with LAME and checks that. A one-note piece gives the fixed cost of a render
(starting fluidsynth and opening the soundfont). CPU is fluidsynth's own time, which
other work on the machine does not inflate as it does the wall-clock time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from midi2audio import FluidSynth

from musicgen.audio import SAMPLE_RATE_HZ, find_soundfont, render
from musicgen.midi import write
from musicgen.score import Note, Score, Tempo

CHORDS = ((60, 64, 67, 72), (57, 60, 64, 69), (53, 57, 60, 65), (55, 59, 62, 67))  # C, Am, F, G
RUNS = 5


def chord_piece(seconds: float, bpm: float = 100.0) -> Score:
    """One four-voice chord a beat, each a bar long in turn, for `seconds`."""
    beats = round(seconds * bpm / 60)
    notes = [
        Note(beat, pitch, beat + 0.9, 60 + 15 * (beat % 4))
        for beat in range(beats)
        for pitch in CHORDS[beat // 4 % len(CHORDS)]
    ]
    return Score(tuple(notes), (Tempo(0.0, round(60_000_000 / bpm)),))


@contextlib.contextmanager
def output_hidden() -> Iterator[None]:
    """Send what child processes print (fluidsynth's banner) to /dev/null."""
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and child-process CPU seconds of one call."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    action()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def best(timings: list[tuple[float, float]]) -> str:
    """The fastest run, wall clock and CPU, in ms."""
    wall, cpu = min(timings)
    return f"{wall * 1000:.0f} ms (cpu {cpu * 1000:.0f} ms)"


def main() -> None:
    rate = SAMPLE_RATE_HZ
    soundfont = find_soundfont()
    piece, one_note = chord_piece(30.0), Score((Note(0.0, 60, 0.25),))
    midi_bytes = write(piece)
    print(f"{len(piece.notes)} notes, {piece.duration_seconds:.1f} s at {rate} Hz, soundfont {soundfont}")
    with tempfile.TemporaryDirectory() as folder:
        midi_path, wav_path = Path(folder, "piece.mid"), Path(folder, "piece.wav")
        midi_path.write_bytes(midi_bytes)
        synth = FluidSynth(str(soundfont), rate)
        ours, theirs, fixed = [], [], []
        with output_hidden():
            for _ in range(RUNS):
                ours.append(timed(lambda: render(midi_bytes)))
                theirs.append(timed(lambda: synth.midi_to_audio(str(midi_path), str(wav_path))))
                fixed.append(timed(lambda: render(write(one_note))))
        mp3_bytes, wav_bytes = len(render(midi_bytes)), wav_path.stat().st_size
    print(f"fixed cost of a render (one short note): {best(fixed)}")
    print(f"render: {best(ours)}; midi2audio wav: {best(theirs)}")
    print(
        f"render {min(ours)[0] * 1000:.0f} ms (MP3 {mp3_bytes / 1e3:.0f} kB), "
        f"midi2audio wav {min(theirs)[0] * 1000:.0f} ms ({wav_bytes / 1e6:.1f} MB): "
        f"{min(theirs)[0] / min(ours)[0]:.1f}x faster, {wav_bytes / mp3_bytes:.1f}x smaller"
    )


if __name__ == "__main__":
    main()
