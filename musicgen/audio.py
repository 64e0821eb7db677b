"""MIDI bytes -> FLAC audio a browser plays: the only module that knows FluidSynth.

FluidSynth reports few failures itself: up to at least 2.3 it exits 0 when a soundfont
is missing or broken, then plays with its own default soundfont, or with none and writes
silence (FluidSynth pull request #1807 makes this an error in later versions), and
midi2audio ignores the exit status anyway. So `render` checks the soundfont before the
run, never lets FluidSynth fall back to another one, stops a run that takes too long, and
checks the FLAC it got: that it is FLAC, as long as the piece, and not digital silence.

The silence check needs no FLAC decoder: the FLAC header (STREAMINFO) holds the MD5 of
the decoded samples, and all-zero samples of that length have a known MD5.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

from musicgen.midi import MidiError, read

log = logging.getLogger(__name__)

AUDIO_MIME = "audio/flac"  # what `render` returns; every current browser plays it
SOUNDFONT_VARIABLE = "MUSICGEN_SOUNDFONT"  # environment variable naming a .sf2 file; wins over the search
SOUNDFONT_PATHS = (  # where Debian, Ubuntu, Fedora and Arch put General MIDI soundfonts
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
)
SOUNDFONT_FOLDER = "/usr/share/soundfonts"  # any .sf2 in it, after SOUNDFONT_PATHS
SAMPLE_RATES_HZ = (8000, 96000)  # what FluidSynth accepts
TIMEOUT_BASE_SECONDS = 30.0  # a render may take this long plus...
TIMEOUT_PER_SECOND_OF_MUSIC = 2.0  # ...this many seconds per second of music (it needs about 0.02)
TIMEOUT_MAX_SECONDS = 600.0  # but never longer than this
LENGTH_TOLERANCE_SECONDS = 0.5  # audio may end this much before the last note does (it runs 2 s past it)

INSTALL_FLUIDSYNTH = "FluidSynth is not installed: on Debian or Ubuntu run sudo apt-get install fluidsynth"
INSTALL_SOUNDFONT = f"install fluid-soundfont-gm or set {SOUNDFONT_VARIABLE} to a .sf2 file"
NO_SOUND = "the synthesizer produced no sound for this piece"
_ERROR_LINE = re.compile("error|failed", re.IGNORECASE)  # lines of FluidSynth's stderr worth showing


class AudioError(Exception):
    """Audio that cannot be made; the message says why in plain words."""


class _FlacInfo(NamedTuple):
    sample_rate_hz: int
    channels: int
    bits_per_sample: int
    frames: int  # samples per channel
    md5: bytes  # of the decoded samples; all zero bytes when the encoder did not compute it


# Finding the synthesizer.


def find_soundfont() -> Path | None:
    """The soundfont to use: $MUSICGEN_SOUNDFONT if set (even to a missing file), else the first installed."""
    if os.environ.get(SOUNDFONT_VARIABLE):
        return Path(os.environ[SOUNDFONT_VARIABLE]).expanduser()
    installed = [Path(path) for path in SOUNDFONT_PATHS if Path(path).is_file()]
    folder = Path(SOUNDFONT_FOLDER)
    if folder.is_dir():
        installed += sorted(path for path in folder.glob("*.sf2") if path.is_file())
    return installed[0] if installed else None


def synth_problem() -> str | None:
    """None when FluidSynth and a usable soundfont are installed, else one plain sentence on what to do."""
    if shutil.which("fluidsynth") is None:
        return INSTALL_FLUIDSYNTH
    soundfont = find_soundfont()
    if soundfont is None:
        return f"no General MIDI soundfont found: {INSTALL_SOUNDFONT}"
    return _soundfont_problem(soundfont)


def _soundfont_problem(path: Path) -> str | None:
    """None for a regular file that starts like a SoundFont (RIFF, then sfbk), else what is wrong with it."""
    try:
        header = _file_header(path)
    except FileNotFoundError:
        return f"the soundfont {path} does not exist: {INSTALL_SOUNDFONT}"
    except OSError as error:
        return f"the soundfont {path} cannot be read ({(error.strerror or str(error)).lower()}): {INSTALL_SOUNDFONT}"
    if header is None:
        return f"the soundfont {path} is not a file: {INSTALL_SOUNDFONT}"
    if header[:4] != b"RIFF" or header[8:12] != b"sfbk":
        return f"{path} is not a SoundFont file: {INSTALL_SOUNDFONT}"
    return None


def _file_header(path: Path) -> bytes | None:
    """The first 12 bytes of a regular file; None for a FIFO, device or folder, which is never opened
    (opening a FIFO waits for a writer forever, and a device may never end)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        return None
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # cannot hang, even if the path changed since
    with open(descriptor, "rb") as file:
        return file.read(12) if stat.S_ISREG(os.fstat(descriptor).st_mode) else None


# Rendering.


def render(midi_bytes: bytes, sample_rate_hz: int = 44100, soundfont: Path | None = None) -> bytes:
    """FLAC audio of a MIDI file, played with a General MIDI soundfont; raises AudioError."""
    low, high = SAMPLE_RATES_HZ
    if not low <= sample_rate_hz <= high:
        raise ValueError(f"sample_rate_hz must be in range {low}..{high}, got {sample_rate_hz}")
    program, soundfont = _synthesizer(soundfont)
    duration_seconds = _duration_seconds(midi_bytes)
    with tempfile.TemporaryDirectory(prefix="musicgen-audio-") as folder:
        midi_path, flac_path = Path(folder, "piece.mid"), Path(folder, "piece.flac")
        midi_path.write_bytes(midi_bytes)
        command = _command(program, soundfont, midi_path, flac_path, sample_rate_hz)
        errors = _run(command, _timeout_seconds(duration_seconds))
        flac = flac_path.read_bytes() if flac_path.is_file() else b""
    _check_flac(flac, duration_seconds, errors)
    return flac


def _synthesizer(soundfont: Path | None) -> tuple[str, Path]:
    """The fluidsynth program and an absolute soundfont path, or AudioError saying what is missing."""
    program = shutil.which("fluidsynth")
    if program is None:
        raise AudioError(INSTALL_FLUIDSYNTH)
    soundfont = soundfont or find_soundfont()
    if soundfont is None:
        raise AudioError(f"no General MIDI soundfont found: {INSTALL_SOUNDFONT}")
    problem = _soundfont_problem(soundfont)
    if problem:
        raise AudioError(problem)
    return program, soundfont.resolve()  # absolute, so a name starting with "-" is not read as an option


def _duration_seconds(midi_bytes: bytes) -> float:
    """Length of the piece in seconds; a file FluidSynth could not play raises AudioError."""
    try:
        return read(midi_bytes).duration_seconds
    except MidiError as error:
        raise AudioError(f"{NO_SOUND}: {error}") from error


def _timeout_seconds(duration_seconds: float) -> float:
    return min(TIMEOUT_BASE_SECONDS + TIMEOUT_PER_SECOND_OF_MUSIC * duration_seconds, TIMEOUT_MAX_SECONDS)


def _command(program: str, soundfont: Path, midi: Path, audio: Path, sample_rate_hz: int) -> list[str]:
    """The fluidsynth call of midi2audio's `midi_to_audio`, with the options it cannot pass.

    midi2audio runs `fluidsynth -ni SOUNDFONT MIDI -F AUDIO -r RATE` and lets FluidSynth
    guess the file type from the extension, which FluidSynth 2.3 gets wrong for .ogg
    (it writes WAV); it takes no other options and drops the exit status. So we run
    fluidsynth ourselves, with the same arguments and these additions.
    """
    return [
        program,
        "-ni",  # no MIDI input driver, no interactive shell
        "-q",  # no banner
        *("-o", "synth.default-soundfont="),  # if our soundfont fails to load, play nothing, not another one
        *("-o", "synth.dynamic-sample-loading=1"),  # load only the instruments used: faster start
        *("-T", "flac", "-r", str(sample_rate_hz), "-F", str(audio), str(soundfont), str(midi)),
    ]


def _run(command: list[str], timeout_seconds: float) -> str:
    """Run fluidsynth and return what it wrote to stderr; raise AudioError when it fails or hangs."""
    try:
        # latin-1 decodes any bytes, so odd characters in a message cannot fail the render.
        done = subprocess.run(command, capture_output=True, timeout=timeout_seconds, encoding="latin-1")
    except subprocess.TimeoutExpired:
        raise AudioError(f"rendering took longer than {timeout_seconds:.3g} s and was stopped") from None
    except OSError as error:  # fluidsynth removed or not executable since `shutil.which` found it
        raise AudioError(f"{INSTALL_FLUIDSYNTH} ({(error.strerror or str(error)).lower()})") from error
    if done.stderr.strip():
        log.debug("fluidsynth said: %s", done.stderr.strip())
    if done.returncode != 0:
        raise AudioError(_no_sound(done.stderr))
    return done.stderr


def _no_sound(errors: str) -> str:
    """The no-sound message, with FluidSynth's first error line if it gave one."""
    lines = [line.strip() for line in errors.splitlines() if _ERROR_LINE.search(line)]
    return f"{NO_SOUND} (FluidSynth: {lines[0].removeprefix('fluidsynth: error: ')})" if lines else NO_SOUND


# Checking the result.


def _check_flac(flac: bytes, duration_seconds: float, errors: str) -> None:
    """Raise AudioError unless `flac` is FLAC audio at least as long as the piece and not all silence."""
    info = _flac_info(flac)
    if info is None or info.frames < (duration_seconds - LENGTH_TOLERANCE_SECONDS) * info.sample_rate_hz:
        raise AudioError(_no_sound(errors))
    if info.md5 == bytes(16):
        log.warning("cannot check the audio for silence: the FLAC encoder wrote no MD5")
    elif info.md5 == _silence_md5(info):
        raise AudioError(_no_sound(errors))


def _flac_info(flac: bytes) -> _FlacInfo | None:
    """The STREAMINFO block that opens every FLAC stream, or None for data that is not FLAC."""
    if len(flac) < 42 or flac[:4] != b"fLaC" or flac[4] & 0x7F != 0:  # block type 0 is STREAMINFO
        return None
    # Bytes 18..25: sample rate (20 bits), channels - 1 (3), bits per sample - 1 (5), frames (36).
    (packed,) = struct.unpack(">Q", flac[18:26])
    sample_rate_hz, frames = packed >> 44, packed & (1 << 36) - 1
    if sample_rate_hz == 0 or frames == 0:  # 0 frames means "unknown", which a finished file never says
        return None
    channels, bits_per_sample = (packed >> 41 & 0x7) + 1, (packed >> 36 & 0x1F) + 1
    return _FlacInfo(sample_rate_hz, channels, bits_per_sample, frames, flac[26:42])


def _silence_md5(info: _FlacInfo) -> bytes:
    """MD5 of all-zero samples of the stream's length, computed 1 MiB at a time."""
    remaining = info.frames * info.channels * ((info.bits_per_sample + 7) // 8)
    digest, zeros = hashlib.md5(), memoryview(bytes(1 << 20))
    while remaining > 0:
        digest.update(zeros[:remaining])
        remaining -= len(zeros)
    return digest.digest()
