"""MIDI bytes -> MP3 audio that every browser plays: the only module that knows FluidSynth and LAME.

FluidSynth reports few failures itself: up to at least 2.3 it exits 0 when a soundfont
is missing or broken, then plays with its own default soundfont, or with none and writes
silence (FluidSynth pull request #1807 makes this an error in later versions), and
midi2audio ignores the exit status anyway. So `render` checks the soundfont before the
run, never lets FluidSynth fall back to another one, stops a run that takes too long, and
checks the samples it got: as long as the piece, and not digital silence. LAME then encodes
them as MP3 (about 70 kbit/s: 30 s of music is about 260 kB, a twentieth of the samples), and
the frames of the MP3 are counted to check that it holds the whole piece.

MP3 rather than Ogg Opus or Vorbis: Safari plays neither in Ogg, and LAME encodes as fast.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from musicgen.midi import MidiError, read

log = logging.getLogger(__name__)

AUDIO_MIME = "audio/mpeg"  # what `render` returns
AUDIO_EXTENSION = "mp3"
SAMPLE_RATE_HZ = 32_000  # of the audio: a quarter less work than 44.1 kHz, and a soundfont sounds the same
LAME_OPTIONS = ("-V", "6", "-q", "7")  # variable bit rate near 70 kbit/s; the faster of LAME's good algorithms
SOUNDFONT_VARIABLE = "MUSICGEN_SOUNDFONT"  # environment variable naming a .sf2 file; wins over the search
SOUNDFONT_PATHS = (  # where Debian, Ubuntu, Fedora and Arch put General MIDI soundfonts
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf3/default-GM.sf3",
)
SOUNDFONT_FOLDER = "/usr/share/soundfonts"  # any .sf2 in it, after SOUNDFONT_PATHS
TIMEOUT_BASE_SECONDS = 30.0  # a render may take this long plus...
TIMEOUT_PER_SECOND_OF_MUSIC = 2.0  # ...this many seconds per second of music (it needs about 0.02)
TIMEOUT_MAX_SECONDS = 600.0  # but never longer than this
LENGTH_TOLERANCE_SECONDS = 0.5  # audio may end this much before the last note does (it runs 2 s past it)

INSTALL_FLUIDSYNTH = "FluidSynth is not installed: on Debian or Ubuntu run sudo apt-get install fluidsynth"
INSTALL_LAME = "the MP3 encoder LAME is not installed: on Debian or Ubuntu run sudo apt-get install lame"
INSTALL_SOUNDFONT = f"install fluid-soundfont-gm or set {SOUNDFONT_VARIABLE} to a .sf2 file"
NO_SOUND = "the synthesizer produced no sound for this piece"
_ERROR_LINE = re.compile("error|failed", re.IGNORECASE)  # lines of FluidSynth's stderr worth showing


class AudioError(Exception):
    """Audio that cannot be made; the message says why in plain words."""


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
    if shutil.which("lame") is None:
        return INSTALL_LAME
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


def render(midi_bytes: bytes, soundfont: Path | None = None) -> bytes:
    """MP3 audio of a MIDI file, played with a General MIDI soundfont; raises AudioError."""
    program, soundfont = _synthesizer(soundfont)
    encoder = _program("lame", INSTALL_LAME)
    duration_seconds = _duration_seconds(midi_bytes)
    timeout_seconds = _timeout_seconds(duration_seconds)
    with tempfile.TemporaryDirectory(prefix="musicgen-audio-") as folder:
        midi_path, samples_path = Path(folder, "piece.mid"), Path(folder, "piece.raw")
        midi_path.write_bytes(midi_bytes)
        errors = _run(_command(program, soundfont, midi_path, samples_path), timeout_seconds)
        samples = samples_path.read_bytes() if samples_path.is_file() else b""
    _check_samples(samples, duration_seconds, errors)
    return encode_mp3(samples, encoder, timeout_seconds)


def encode_mp3(samples: bytes, encoder: str, timeout_seconds: float) -> bytes:
    """MP3 of 16-bit stereo samples at SAMPLE_RATE_HZ, checked to hold all of them; raises AudioError."""
    rate = f"{SAMPLE_RATE_HZ / 1000:g}"
    raw_input = ("-r", "-s", rate, "--bitwidth", "16", "--signed", "--little-endian", "-m", "j")
    command = [encoder, "--quiet", *raw_input, *LAME_OPTIONS, "--resample", rate, "-", "-"]
    try:
        done = subprocess.run(command, input=samples, capture_output=True, timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        raise AudioError(f"encoding took longer than {timeout_seconds:.3g} s and was stopped") from None
    except OSError as error:
        raise AudioError(f"{INSTALL_LAME} ({(error.strerror or str(error)).lower()})") from error
    frames = len(samples) // BYTES_PER_FRAME
    if done.returncode != 0 or mp3_frames(done.stdout) * MP3_FRAME_SAMPLES < frames:
        log.warning("lame failed (exit status %s): %s", done.returncode, done.stderr[-2000:].decode(errors="replace"))
        raise AudioError("the sound could not be encoded as MP3")
    return done.stdout


def _synthesizer(soundfont: Path | None) -> tuple[str, Path]:
    """The fluidsynth program and an absolute soundfont path, or AudioError saying what is missing."""
    program = _program("fluidsynth", INSTALL_FLUIDSYNTH)
    soundfont = soundfont or find_soundfont()
    if soundfont is None:
        raise AudioError(f"no General MIDI soundfont found: {INSTALL_SOUNDFONT}")
    problem = _soundfont_problem(soundfont)
    if problem:
        raise AudioError(problem)
    return program, soundfont.resolve()  # absolute, so a name starting with "-" is not read as an option


def _program(name: str, install: str) -> str:
    """The path of a program, or AudioError saying how to install it."""
    program = shutil.which(name)
    if program is None:
        raise AudioError(install)
    return program


def _duration_seconds(midi_bytes: bytes) -> float:
    """Length of the piece in seconds; a file FluidSynth could not play raises AudioError."""
    try:
        return read(midi_bytes).duration_seconds
    except MidiError as error:
        raise AudioError(f"{NO_SOUND}: {error}") from error


def _timeout_seconds(duration_seconds: float) -> float:
    return min(TIMEOUT_BASE_SECONDS + TIMEOUT_PER_SECOND_OF_MUSIC * duration_seconds, TIMEOUT_MAX_SECONDS)


def _command(program: str, soundfont: Path, midi: Path, samples: Path) -> list[str]:
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
        *("-T", "raw", "-O", "s16", "-E", "little", "-r", str(SAMPLE_RATE_HZ)),  # 16-bit stereo samples
        *("-F", str(samples), str(soundfont), str(midi)),
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

BYTES_PER_FRAME = 4  # 16-bit stereo
SILENCE_PEAK_TO_PEAK = 8  # steps of 16-bit samples (-72 dB): FluidSynth's silence is a constant -1, not 0
MP3_FRAME_SAMPLES = 1152  # samples per channel in an MPEG-1 Layer III frame
_MP3_KILOBITS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # by bitrate index
_MP3_RATES_HZ = (44_100, 48_000, 32_000)  # by sample rate index


def _check_samples(samples: bytes, duration_seconds: float, errors: str) -> None:
    """Raise AudioError unless the samples last as long as the piece and are not all silence."""
    frames = len(samples) // BYTES_PER_FRAME
    if frames < (duration_seconds - LENGTH_TOLERANCE_SECONDS) * SAMPLE_RATE_HZ:
        raise AudioError(_no_sound(errors))
    values = np.frombuffer(samples, np.int16, frames * 2)
    if int(values.max()) - int(values.min()) <= SILENCE_PEAK_TO_PEAK:
        raise AudioError(_no_sound(errors))


def mp3_frames(data: bytes) -> int:
    """Number of MPEG-1 Layer III frames in a row from the start of `data`, up to the first that is not one."""
    frames, position = 0, 0
    while position + 4 <= len(data):
        size = _mp3_frame_size(data[position : position + 4])
        if size is None or position + size > len(data):
            break
        frames, position = frames + 1, position + size
    return frames


def _mp3_frame_size(header: bytes) -> int | None:
    """Bytes of the MPEG-1 Layer III frame with this 4-byte header; None when it is no such header."""
    (word,) = struct.unpack(">I", header)
    if word >> 21 != 0x7FF or (word >> 17) & 0xF != 0b1101:  # frame sync, then MPEG-1 (11) and Layer III (01)
        return None
    bitrate_index, rate_index, padding = (word >> 12) & 0xF, (word >> 10) & 0x3, (word >> 9) & 0x1
    if not 0 < bitrate_index < 15 or rate_index == 3:
        return None
    return 144_000 * _MP3_KILOBITS[bitrate_index] // _MP3_RATES_HZ[rate_index] + padding
