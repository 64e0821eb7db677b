"""musicgen.audio: real FluidSynth renders, decoded again, and every way it can fail said plainly."""

import os
import re
import stat
import struct
import subprocess
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from musicgen import audio
from musicgen.audio import AudioError, find_soundfont, render, synth_problem
from musicgen.midi import write
from musicgen.score import Note, Score, Tempo

# Building and decoding audio.


def chord_piece() -> Score:
    """Four-voice chords, one per beat: four at 120 bpm, then four at 90 bpm (4.67 s in all)."""
    chords = [(60, 64, 67, 72), (53, 57, 60, 65), (55, 59, 62, 67), (48, 55, 64, 72)] * 2
    notes = [Note(beat, pitch, beat + 0.9, 90) for beat, chord in enumerate(chords) for pitch in chord]
    return Score(tuple(notes), (Tempo(0.0, 500_000), Tempo(4.0, 666_667)))


def decode_mp3(mp3: bytes, folder: Path) -> tuple[np.ndarray, int]:
    """Samples (frames, channels) in -1..1 and the sample rate, decoded by LAME's own decoder."""
    (folder / "decoded.mp3").write_bytes(mp3)
    subprocess.run(["lame", "--quiet", "--decode", "decoded.mp3", "decoded.wav"], cwd=folder, check=True)
    with wave.open(str(folder / "decoded.wav")) as decoded:
        frames = np.frombuffer(decoded.readframes(decoded.getnframes()), np.int16)
        return frames.reshape(-1, decoded.getnchannels()) / 32768.0, decoded.getframerate()


def broken_soundfont(folder: Path) -> Path:
    """A file with a SoundFont's first 12 bytes and nothing usable after them."""
    path = folder / "broken.sf2"
    path.write_bytes(b"RIFF" + struct.pack("<I", 100_000) + b"sfbk" + bytes(range(256)) * 40)
    return path


# Rendering.


def test_render_gives_mp3_that_sounds_for_the_whole_piece(tmp_path):
    score = chord_piece()
    mp3 = render(write(score))
    assert audio.mp3_frames(mp3) * audio.MP3_FRAME_SAMPLES >= score.duration_seconds * audio.SAMPLE_RATE_HZ
    assert 10_000 < len(mp3) < 150_000  # about 9 kB per second; the samples would be 176 kB per second
    samples, rate = decode_mp3(mp3, tmp_path)
    assert rate == audio.SAMPLE_RATE_HZ and samples.shape[1] == 2
    assert score.duration_seconds <= len(samples) / rate < score.duration_seconds + 4  # plus the release
    level_db = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2))
    assert -40 < level_db < -3, level_db
    last_chord = samples[int(score.beat_to_seconds(7.0) * rate) : int(score.beat_to_seconds(7.9) * rate)]
    assert np.abs(last_chord).max() > 0.05  # the slower second half is heard too


def test_an_mp3_cut_short_is_refused(monkeypatch):
    samples = np.full(audio.SAMPLE_RATE_HZ * 4, 1000, np.int16).tobytes()  # 2 s of stereo
    mp3 = audio.encode_mp3(samples, "lame", 30)
    assert audio.mp3_frames(mp3) * audio.MP3_FRAME_SAMPLES >= 2 * audio.SAMPLE_RATE_HZ
    assert audio.mp3_frames(mp3[: len(mp3) // 2]) < audio.mp3_frames(mp3) // 2 + 1
    assert audio.mp3_frames(b"ID3" + mp3) == 0
    with pytest.raises(AudioError, match="could not be encoded as MP3"):
        audio.encode_mp3(samples, "false", 30)  # an encoder that writes nothing


def test_without_lame_the_problem_says_how_to_install_it(monkeypatch):
    real_which = audio.shutil.which
    monkeypatch.setattr(audio.shutil, "which", lambda name: None if name == "lame" else real_which(name))
    assert synth_problem() == audio.INSTALL_LAME
    with pytest.raises(AudioError, match="apt-get install lame"):
        render(write(chord_piece()))


@pytest.mark.parametrize(
    "midi_bytes, reason",
    [(b"", "this file is empty"), (b"not a midi file", "not a MIDI file"), (write(Score()), "no notes")],
    ids=["empty", "garbage", "no notes"],
)
def test_render_of_a_piece_without_sound_raises(midi_bytes, reason):
    with pytest.raises(AudioError, match=f"produced no sound for this piece: .*{reason}"):
        render(midi_bytes)


def test_render_stops_a_synthesizer_that_takes_too_long(monkeypatch):
    monkeypatch.setattr(audio, "TIMEOUT_MAX_SECONDS", 0.001)
    with pytest.raises(AudioError, match=r"^rendering took longer than 0\.001 s and was stopped$"):
        render(write(chord_piece()))


# Soundfonts.


def test_a_missing_soundfont_is_named(tmp_path):
    missing = tmp_path / "missing.sf2"
    message = f"^the soundfont {re.escape(str(missing))} does not exist: install fluid-soundfont-gm"
    with pytest.raises(AudioError, match=message):
        render(write(chord_piece()), soundfont=missing)


def test_soundfont_variable_wins_even_when_its_file_is_missing(monkeypatch, tmp_path):
    missing = tmp_path / "missing.sf2"
    monkeypatch.setenv("MUSICGEN_SOUNDFONT", str(missing))
    assert find_soundfont() == missing
    assert synth_problem().startswith(f"the soundfont {missing} does not exist")
    with pytest.raises(AudioError, match="does not exist: .* or set MUSICGEN_SOUNDFONT to a .sf2 file"):
        render(write(chord_piece()))


def test_soundfont_variable_naming_a_file_that_is_no_soundfont(monkeypatch, tmp_path):
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"this is not a soundfont" * 100)
    monkeypatch.setenv("MUSICGEN_SOUNDFONT", str(garbage))
    with pytest.raises(AudioError, match=f"^{re.escape(str(garbage))} is not a SoundFont file"):
        render(write(chord_piece()))


def test_a_soundfont_fluidsynth_cannot_load_gives_no_sound(monkeypatch, tmp_path):
    """FluidSynth exits 0 and writes silence here; only the silence check notices."""
    monkeypatch.setenv("MUSICGEN_SOUNDFONT", str(broken_soundfont(tmp_path)))
    assert synth_problem() is None  # it looks like a soundfont from outside
    with pytest.raises(AudioError, match="^the synthesizer produced no sound for this piece"):
        render(write(chord_piece()))


def soundfont_problem_within(seconds: float, path: Path) -> tuple[str | None, bool]:
    """synth_problem() for MUSICGEN_SOUNDFONT=path, run in a thread; (its answer, whether it hung)."""
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(problem=synth_problem()), daemon=True)
    thread.start()
    thread.join(seconds)
    hung = thread.is_alive()
    if hung and stat.S_ISFIFO(os.stat(path).st_mode):  # let a reader blocked on the FIFO go
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
    return answer.get("problem"), hung


def fifo(folder: Path) -> Path:
    os.mkfifo(folder / "font.sf2")
    return folder / "font.sf2"


@pytest.mark.parametrize(
    "make_path",
    [fifo, lambda folder: folder, lambda folder: Path("/dev/zero")],
    ids=["fifo", "folder", "device"],
)
def test_a_soundfont_that_is_not_a_regular_file_is_refused_without_opening_it(make_path, monkeypatch, tmp_path):
    path = make_path(tmp_path)
    monkeypatch.setenv("MUSICGEN_SOUNDFONT", str(path))
    problem, hung = soundfont_problem_within(10, path)
    assert not hung, "synth_problem() blocked on the soundfont"
    expected = f"the soundfont {path} is not a file: {audio.INSTALL_SOUNDFONT}"
    assert problem == expected and "set MUSICGEN_SOUNDFONT to a .sf2 file" in problem
    with pytest.raises(AudioError, match=f"^{re.escape(expected)}$"):
        render(write(chord_piece()), soundfont=path)


# Detecting the synthesizer.


def test_synth_problem_is_none_on_a_machine_with_fluidsynth_and_a_soundfont(monkeypatch):
    monkeypatch.delenv("MUSICGEN_SOUNDFONT", raising=False)
    assert synth_problem() is None
    assert find_soundfont().is_file()


def test_without_fluidsynth_on_the_path_the_problem_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    message = "FluidSynth is not installed: on Debian or Ubuntu run sudo apt-get install fluidsynth"
    assert synth_problem() == message
    with pytest.raises(AudioError, match=f"^{message}$"):
        render(write(chord_piece()))
