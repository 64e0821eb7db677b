"""Peak memory of one piece of work, measured in a fresh child process: for tests/test_memory.py and
benchmarks/memory.py.

    python -m tests.memory_probe training '{"model": {...}, "train": {...}, "training_bytes": 550000000, "batches": 2}'
    python -m tests.memory_probe composer '{"model_folder": "...", "variations": 4, "seconds": 120}'

The child prints one JSON line: `before` (RSS once everything is imported and the data is read, bytes),
`peak` (the process's peak RSS plus the largest RSS its children reached) and `estimate` (what
musicgen.memory says the work needs above `before`).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent


def measure(kind: str, settings: dict, timeout: float = 900) -> dict:
    """Run one measurement in a fresh Python process; its JSON result."""
    command = [sys.executable, "-m", "tests.memory_probe", kind, json.dumps(settings)]
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} probe failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class ChildWatcher:
    """The most memory that this process's children held at once, sampled every 10 ms.

    Counted as private memory (/proc/PID/smaps_rollup): a child forked from this process shares its
    pages until it starts its program, so its RSS would count them twice."""

    def __init__(self):
        self.largest = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.largest = max(self.largest, sum(private_bytes(pid) for pid in child_pids()))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.largest


def private_bytes(pid: str) -> int:
    """Memory only this process holds (0 once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    fields = dict(line.split(":", 1) for line in lines if ":" in line and not line[0].isdigit())
    return sum(int(fields[name].split()[0]) * 1024 for name in ("Private_Clean", "Private_Dirty") if name in fields)


def child_pids() -> list[str]:
    """Processes started by any thread of this one (/proc lists children per thread)."""
    pids = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += (task / "children").read_text().split()
        except OSError:  # the thread ended
            continue
    return pids


def probe_training(settings: dict) -> dict:
    """Plan a training on the bundled chorales as the app does (musicgen.jobs.plan_request, with
    `training_bytes` of memory), train `batches` whole batches of it; peak against the estimate."""
    from musicgen import jobs
    from musicgen.corpus import load_folder
    from musicgen.settings import ModelConfig, TrainConfig
    from musicgen.train import train

    corpus = load_folder(REPOSITORY / "samples" / "bach")
    request = jobs.TrainingRequest(corpus, ModelConfig(**settings["model"]), TrainConfig(**settings["train"]))
    request = jobs.plan_request(request, settings["training_bytes"])
    estimate = request.memory_bytes
    steps = {"left": settings["batches"] * request.train_config.accumulation_steps}

    def enough() -> bool:
        steps["left"] -= 1
        return steps["left"] <= 0

    before = resident_bytes()
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        train(corpus, Path(runs), request.model_config, request.train_config, should_stop=enough)
        seconds = time.perf_counter() - started
    plan = {
        "batch_size": request.train_config.batch_size,
        "accumulation_steps": request.train_config.accumulation_steps,
    }
    return {"before": before, "peak": peak_bytes(), "estimate": estimate, "seconds": seconds, **plan}


def make_model_folder(model, folder: Path) -> None:
    """A bundle of this architecture (musicgen.settings.ModelConfig) with untrained weights."""
    from musicgen import bundle
    from musicgen.model import build_model
    from musicgen.tokens import Vocabulary

    bundle.write_info(folder, bundle.BundleInfo(model, Vocabulary(), "0" * 16, ["untrained.mid"], None))
    bundle.write_weights(folder, build_model(model), model)
    bundle.write_history(folder, [])


def probe_composer(settings: dict) -> dict:
    """As the app: the built-in model loaded and composing, then a visitor's model loaded, composing
    `variations` pieces of `seconds` at every variations count up to that, the last ones rendered with
    FluidSynth `renders` at once. `before` is taken with the built-in model ready; `held` is what the
    visitor's model still holds afterwards (what the model cache counts), `peak` the whole process's."""
    from concurrent.futures import ThreadPoolExecutor

    from musicgen import audio, memory, sessions
    from musicgen.sample import SampleConfig

    watcher = ChildWatcher()
    built_in = sessions.load_composer(REPOSITORY / "checkpoints" / "bach")
    sessions.compose(built_in, SampleConfig(max_seconds=1), "built-in")
    before = resident_bytes()
    composer = sessions.load_composer(Path(settings["model_folder"]))
    seconds = float(settings["seconds"])
    for variations in range(1, settings["variations"] + 1):
        config = SampleConfig(max_notes=min(5000, int(20 * seconds)), max_seconds=seconds, variations=variations)
        pieces = sessions.compose(composer, config, "probe")
    held = resident_bytes() - before
    with ThreadPoolExecutor(settings["renders"]) as renderers:
        list(renderers.map(lambda piece: audio.render(piece.midi_bytes), pieces))
    children = watcher.stop()
    estimate = memory.composer_bytes(composer.info.model_config)
    return {"before": before, "held": held, "peak": peak_bytes() + children, "estimate": estimate, "children": children}


if __name__ == "__main__":
    kind, settings = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"training": probe_training, "composer": probe_composer}[kind](settings)))
