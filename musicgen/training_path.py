"""Which training path is fastest on this CPU: read from its flags, measured once where it depends on the machine.

Every path trains the same network with the same weights: they differ in the dtype of the matrix products
(bfloat16 only where the CPU multiplies it natively: emulated, it is slower) and in the LSTM loop (ours,
`musicgen.model.lstm_sequence`, or Keras's). Where more than one path could win, a probe of a few seconds
trains a small LSTM on each for a few steps, interleaved so that a busy neighbour slows all alike, and keeps
the fastest; the answer is cached per machine (CPU model, flags, oneDNN ISA cap, TensorFlow version) in
$MUSICGEN_CACHE (default ~/.cache/musicgen).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_VARIABLE = "MUSICGEN_CACHE"
FLAGS_THAT_MATTER = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
ISA_WITHOUT_BFLOAT16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")
PROBE_ROUNDS = 3  # rounds of PROBE_STEPS steps on every candidate, interleaved
PROBE_STEPS = 2


@dataclass(frozen=True)
class TrainingPath:
    """How the matrix products and the LSTM loop run."""

    precision: str = "float32"  # dtype of the matrix products: "float32" or "bfloat16"
    fast_loop: bool = True  # True: musicgen.model.lstm_sequence; False: Keras's own loop

    def describe(self) -> str:
        """A few words for logs and benchmarks."""
        return f"{self.precision} products, {'our' if self.fast_loop else 'Keras'} LSTM loop"


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU that decide the path (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return set(flags) & set(FLAGS_THAT_MATTER)


def bfloat16_is_native(flags: set[str] | None = None) -> bool:
    """True where the CPU multiplies bfloat16 (AVX-512 BF16 or AMX) and oneDNN is not capped below it."""
    flags = cpu_flags() if flags is None else flags
    capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ISA_WITHOUT_BFLOAT16
    return bool(flags & set(BFLOAT16_FLAGS)) and not capped


def candidates(flags: set[str] | None = None) -> list[TrainingPath]:
    """The paths worth measuring on this CPU, the one expected fastest first."""
    precisions = ["bfloat16", "float32"] if bfloat16_is_native(flags) else ["float32"]
    return [TrainingPath(precision, fast_loop) for precision in precisions for fast_loop in (True, False)]


def machine_key() -> str:
    """What the fastest path depends on: CPU model and flags, the oneDNN ISA cap, the TensorFlow version."""
    import tensorflow as tf

    try:
        model = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "unknown"
    parts = [model, *sorted(cpu_flags()), os.environ.get("ONEDNN_MAX_CPU_ISA", ""), tf.__version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_file() -> Path:
    """Where probe results are kept."""
    root = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "musicgen"
    return Path(root) / "training-path.json"


def fastest_path(precision: str = "auto") -> TrainingPath:
    """The path to train with: `precision` "float32" or "bfloat16" fixes the products, "auto" lets the CPU choose."""
    choices = [path for path in candidates() if precision in ("auto", path.precision)]
    if not choices:  # bfloat16 asked for on a CPU without it: it runs, emulated
        return TrainingPath(precision)
    if len(choices) == 1:
        return choices[0]
    measured = _cached_paths().get(machine_key())
    if measured is None:
        measured = probe(candidates())
        _cache_paths(machine_key(), measured)
    ranked = [TrainingPath(**path) for path in measured]
    return next(path for path in ranked if path in choices)


def _cached_paths() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cache_paths(key: str, paths: list[dict]) -> None:
    data = {**_cached_paths(), key: paths}
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file().with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data, indent=1))
        temporary.replace(cache_file())
    except OSError as error:  # a read-only home: the probe runs again next time
        log.info("cannot cache the training path in %s: %s", cache_file(), error)


def probe(paths: list[TrainingPath]) -> list[dict]:
    """The paths ordered by their median step time on a small LSTM, fastest first (a few seconds)."""
    import numpy as np

    steps = {path: _probe_step(path) for path in paths}
    seconds = {path: [] for path in paths}
    for _ in range(PROBE_ROUNDS):
        for path, step in steps.items():
            started = time.perf_counter()
            for _ in range(PROBE_STEPS):
                step()
            seconds[path].append(time.perf_counter() - started)
    ranked = sorted(paths, key=lambda path: float(np.median(seconds[path])))
    log.info("training path probe: %s", ", ".join(f"{p.describe()} {np.median(seconds[p]):.3f} s" for p in ranked))
    return [asdict(path) for path in ranked]


def _probe_step(path: TrainingPath):
    """A compiled, warmed-up training step of a small LSTM on this path."""
    import keras
    import numpy as np

    from musicgen.model import build_model
    from musicgen.settings import ModelConfig

    model = build_model(ModelConfig(vocabulary_size=128, layers=1, units=256), path.precision, path.fast_loop)
    model.compile(optimizer=keras.optimizers.Adam(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = np.random.default_rng(0).integers(0, 128, (64, 65))
    model.train_on_batch(ids[:, :-1], ids[:, 1:])
    return lambda: model.train_on_batch(ids[:, :-1], ids[:, 1:])
