"""Training in worker threads, at most a few at once in the process, with progress any thread can read.

A `TrainingJob` trains (musicgen.train.train) in a worker thread that never touches the
UI. Its progress is a plain `Progress` snapshot behind a lock, which the page polls. The
process-wide `TrainingQueue` lets at most `max_running` jobs train at once, and only while
their expected peaks (musicgen.memory) fit its share of memory together; the others wait in
order and know their place. A job nobody has looked at for `abandon_seconds` (its browser
tab was closed) stops by itself,
keeping its finished epochs like any stopped job: asking again resumes after the last one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from musicgen import memory
from musicgen.boundary import parameter_count
from musicgen.corpus import Corpus, corpus_to_ids
from musicgen.sessions import FOREGROUND, GENERIC_ERROR, sentence
from musicgen.tokens import TokenConfig, Vocabulary
from musicgen.workspace import Workspace

PAUSE_SECONDS = 3.0  # longest a training waits between two batches for pieces being composed
MAX_WAITING = 16  # trainings waiting in the queue; each holds a thread until its turn
# What the app offers for a new model and its training (tests check that every combination fits the memory budget).
LAYER_CHOICES = (1, 2, 3)
NEW_MODEL_VOCABULARY = Vocabulary(TokenConfig(instruments=True))  # a new model keeps each part's instrument
BASE_MODEL = Path(__file__).resolve().parent.parent / "checkpoints" / "base"  # all built-in styles: uploads start here
UNIT_CHOICES = (32, 64, 128, 256, 512)
SEQUENCE_LENGTH_CHOICES = (16, 32, 64, 128, 256, 512)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingRequest:
    """Everything one training needs; checked and planned by `plan_request` before it is queued."""

    corpus: Corpus
    model_config: object  # musicgen.model.ModelConfig; ignored when start_from is set
    train_config: object  # musicgen.train.TrainConfig
    start_from: Path | None = None  # a model folder whose weights (and settings) the run starts from
    memory_bytes: int = 0  # expected peak of the planned training (set by plan_request); the queue reserves it


@dataclass(frozen=True)
class Progress:
    """A snapshot of one job, safe to read from any thread."""

    state: str  # "queued", "running", "finished", "stopped" or "failed"
    epochs: int  # epochs asked for
    history: tuple[dict, ...] = ()  # every finished epoch of the run, earlier visits' included
    place_in_queue: int = 0  # 1 = next to start; 0 when not waiting
    resumed_after_epoch: int = 0  # epochs the run had before this job; 0 for a fresh run
    run_dir: Path | None = None
    message: str | None = None  # plain words on how it ended, for "stopped" and "failed"
    stopping: bool = False  # a stop was asked for and is on its way
    ended_at: float | None = None  # time.monotonic() when it ended; None while queued or running
    likeness: tuple[str, ...] = ()  # once finished: how close the model's pieces are to the music, in sentences
    step: int = 0  # optimizer steps done in the run, earlier visits' included
    steps_per_epoch: int = 0  # 0 until the first step of this job
    seconds_per_step: float | None = None  # measured in this job, pauses at epoch ends included
    budget_ends_at: float | None = None  # time.monotonic() when its time budget runs out; None without one

    @property
    def active(self) -> bool:
        """True while queued or running."""
        return self.state in ("queued", "running")

    @property
    def epoch(self) -> int:
        """Epochs finished so far."""
        return len(self.history)

    @property
    def step_in_epoch(self) -> int:
        """Steps done in the epoch under way (0 at an epoch's end)."""
        return self.step % self.steps_per_epoch if self.steps_per_epoch else 0

    @property
    def share_done(self) -> float:
        """The part of the asked-for epochs done, counted in steps once they are known."""
        if self.steps_per_epoch:
            return min(1.0, self.step / (self.epochs * self.steps_per_epoch))
        return min(1.0, self.epoch / self.epochs)

    @property
    def seconds_per_epoch(self) -> float | None:
        """Typical time of one epoch: the mean of the last three, leaving out the first (it compiles); before an
        epoch of this job ends, the measured time per step times the steps of an epoch."""
        seconds = [entry["seconds"] for entry in self.history[self.resumed_after_epoch :]]
        recent = (seconds[1:] if len(seconds) > 1 else seconds)[-3:]
        if recent:
            return sum(recent) / len(recent)
        return self.seconds_per_step * self.steps_per_epoch if self.seconds_per_step else None

    @property
    def seconds_left(self) -> float | None:
        """Estimated time until the last epoch ends, or the time budget runs out if sooner; None until measured."""
        if self.seconds_per_step and self.steps_per_epoch:
            left = max(self.epochs * self.steps_per_epoch - self.step, 0) * self.seconds_per_step
        elif self.seconds_per_epoch is not None:
            left = max(self.epochs - self.epoch, 0) * self.seconds_per_epoch
        else:
            return None
        if self.budget_ends_at is not None:
            budget_left = max(self.budget_ends_at - time.monotonic(), 0.0)
            if self.step < self.steps_per_epoch and self.seconds_per_step:  # the budget lets the first epoch end
                budget_left = max(budget_left, (self.steps_per_epoch - self.step) * self.seconds_per_step)
            left = min(left, budget_left)
        return left

    @property
    def memorising_since(self) -> int | None:
        """The best epoch, when validation loss has risen for 2+ epochs after it while training loss fell."""
        scored = [entry for entry in self.history if entry.get("validation_loss") is not None]
        if len(scored) < 3:
            return None
        best = min(scored, key=lambda entry: entry["validation_loss"])
        last = scored[-1]
        after_best = [entry for entry in scored if entry["epoch"] > best["epoch"]]
        if len(after_best) >= 2 and last["validation_loss"] > best["validation_loss"] and last["loss"] < best["loss"]:
            return int(best["epoch"])
        return None


class TrainingJob:
    """One training: its request, owner and progress. The worker thread writes, the page reads."""

    _numbers = itertools.count(1)

    def __init__(self, request: TrainingRequest, workspace: Workspace, abandon_seconds: float = 600.0):
        self.request, self.workspace, self.abandon_seconds = request, workspace, abandon_seconds
        self.number = next(self._numbers)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._epochs_seen = 0
        self._first_step: tuple[int, float] | None = None  # (step, time.monotonic()) of this job's first step
        self._last_seen = time.monotonic()
        self.run_dir = planned_run_folder(request, workspace)  # known before it starts, to keep it busy
        self._progress = Progress("queued", request.train_config.epochs, run_dir=self.run_dir)
        self._place = lambda: 0  # set by the queue

    @property
    def memory_bytes(self) -> int:
        """The training's expected peak (musicgen.memory): the queue starts it when that fits."""
        return self.request.memory_bytes

    @property
    def owner(self) -> str:
        """The session id of the workspace the job trains into."""
        return self.workspace.session_id

    def snapshot(self) -> Progress:
        """The progress now; reading it also tells the job someone is still watching."""
        with self._lock:
            self._last_seen = time.monotonic()
            progress = self._progress
        place = self._place() if progress.state == "queued" else 0
        return replace(progress, place_in_queue=place, stopping=self._stop.is_set() and progress.active)

    def request_stop(self) -> None:
        """Ask the job to stop after the current batch (or to leave the queue)."""
        self._stop.set()

    def should_stop(self) -> bool:
        """True once a stop was asked for, or nobody has looked at the progress for abandon_seconds.

        Called between batches, it first lets any piece being composed finish (up to PAUSE_SECONDS).
        """
        FOREGROUND.wait_until_idle(PAUSE_SECONDS)
        return self.stop_requested()

    def stop_requested(self) -> bool:
        """True once a stop was asked for or nobody has looked for abandon_seconds; never waits."""
        with self._lock:
            abandoned = time.monotonic() - self._last_seen > self.abandon_seconds
        if abandoned and not self._stop.is_set():
            log.info("training %d of session %s stops: nobody is watching", self.number, self.owner)
            self._stop.set()
        return self._stop.is_set()

    def _update(self, **changes) -> None:
        if changes.get("state") in ("finished", "stopped", "failed"):
            changes["ended_at"] = time.monotonic()
        with self._lock:
            self._progress = replace(self._progress, **changes)

    def _on_epoch(self, report) -> None:
        """Add an epoch (musicgen.train.EpochReport); the first one of the job tells where it resumed."""
        entry = asdict(report)
        with self._lock:
            progress = self._progress
            resumed = progress.resumed_after_epoch if self._epochs_seen else report.epoch - 1
            earlier = tuple(e for e in progress.history if e["epoch"] < report.epoch)
            self._progress = replace(progress, history=(*earlier, entry), resumed_after_epoch=resumed)
            self._epochs_seen += 1

    def _on_step(self, step: int, steps_per_epoch: int) -> None:
        """Count a step; time per step is measured from this job's first one (the compile comes before it)."""
        now = time.monotonic()
        changes = dict(step=step, steps_per_epoch=steps_per_epoch)
        if self._first_step is None:
            self._first_step = (step, now)
            budget = self.request.train_config.time_budget_seconds
            if budget:
                changes["budget_ends_at"] = now + budget
        elif step > self._first_step[0]:
            changes["seconds_per_step"] = (now - self._first_step[1]) / (step - self._first_step[0])
        self._update(**changes)

    def run(self) -> None:
        """Train (the worker thread calls this); every outcome ends up in the progress, never raised."""
        try:
            self._train()
        except ValueError as error:
            self._update(state="failed", message=sentence(str(error)))
        except Exception:  # noqa: BLE001 - the worker must report, not die silently
            log.exception("training %d of session %s failed", self.number, self.owner)
            self._update(state="failed", message=GENERIC_ERROR)

    def _train(self) -> None:
        from musicgen import bundle
        from musicgen.train import train

        request = self.request
        start_from = bundle.load_bundle(request.start_from) if request.start_from is not None else None
        run_dir = self.run_dir
        history = tuple(bundle.read_history(run_dir)) if (run_dir / "backup").is_dir() else ()
        self._update(state="running", history=history, resumed_after_epoch=len(history))
        result = train(
            request.corpus,
            self.workspace.runs,
            request.model_config,
            request.train_config,
            start_from.info.vocabulary if start_from is not None else NEW_MODEL_VOCABULARY,
            on_epoch=self._on_epoch,
            should_stop=self.should_stop,
            start_from=start_from,
            on_step=self._on_step,
        )
        message = None
        if result.stopped:
            message = f"Stopped after epoch {result.epochs_done}. Press Train to go on from there."
        elif result.ended_by:
            message = ENDED_BY[result.ended_by].format(epochs=result.epochs_done)
        elif result.epochs_done == result.resumed_from_epoch:
            message = f"This model already had {result.epochs_done} epochs: ask for more to train it further."
        self._update(
            state="stopped" if result.stopped else "finished",
            likeness=() if result.stopped else likeness_sentences(result.run_dir, request),
            history=tuple(bundle.read_history(result.run_dir)),
            resumed_after_epoch=result.resumed_from_epoch,
            run_dir=result.run_dir,
            message=message,
        )


ENDED_BY = {  # musicgen.train.TrainResult.ended_by -> what the page says
    "time budget": "Training finished: {epochs} epochs in its time. Press Train to learn more from where it ended.",
    "patience": "Training finished after {epochs} epochs: the model had stopped getting better at your music.",
}


def likeness_sentences(run_dir: Path, request: TrainingRequest) -> tuple[str, ...]:
    """How close a few pieces of the trained model are to the music it was taught (musicgen.likeness)."""
    from musicgen import likeness
    from musicgen.bundle import load_weight_arrays
    from musicgen.sample import SampleConfig, Sampler

    info, weights = load_weight_arrays(run_dir)
    config = SampleConfig(
        temperature=likeness.TEMPERATURE, max_seconds=likeness.PIECE_SECONDS, variations=likeness.PIECES, seed=1
    )
    pieces = Sampler(weights, info.vocabulary, info.openings).scores(config)
    try:
        measured = likeness.measure_likeness(pieces, request.corpus.scores, *starting_music_style(request.start_from))
    except ValueError:  # pieces without notes: nothing to compare
        return ()
    return tuple(measured.sentences())


_starting_styles: dict[Path, tuple] = {}  # built-in model folder -> (its music's StyleMeasures, its title)


def starting_music_style(start_from: Path | None) -> tuple:
    """(style measures, title) of the music a built-in model (or the base, BASE_MODEL) learned from, measured
    once; (None, "") for any other start."""
    from musicgen.corpus import load_folder
    from musicgen.metrics import corpus_style
    from musicgen.styles import built_in_styles

    folder = Path(start_from).resolve() if start_from else None
    styles = built_in_styles()
    if folder is not None and folder == BASE_MODEL.resolve():
        music, title = [style.music for style in styles], "the built-in styles"
    else:
        style = next((style for style in styles if style.model.resolve() == folder), None)
        if style is None:
            return None, ""
        music, title = [style.music], style.title
    if folder not in _starting_styles:
        scores = [score for path in music for score in load_folder(path).scores]
        _starting_styles[folder] = (corpus_style(scores), title)
    return _starting_styles[folder]


def effective_model_config(request: TrainingRequest):
    """The architecture the run will have (musicgen.model.ModelConfig): the start model's, or the
    requested one sized to the vocabulary, as `musicgen.train.train` decides."""
    from musicgen.bundle import read_info
    from musicgen.settings import ModelConfig

    if request.start_from is not None:
        return read_info(Path(request.start_from))[0].model_config
    return ModelConfig(**{**request.model_config.to_dict(), "vocabulary_size": len(NEW_MODEL_VOCABULARY)})


def planned_run_folder(request: TrainingRequest, workspace: Workspace) -> Path:
    """The run folder `musicgen.train.train` will use for this request in this workspace."""
    from musicgen.train import run_folder

    config = effective_model_config(request)
    return run_folder(workspace.runs, request.corpus.fingerprint, config, request.train_config)


def estimated_run_bytes(request: TrainingRequest) -> int:
    """Disk the run of a planned request takes: best weights plus a backup with the optimizer's two moments
    (and the accumulated gradients when a batch is split), 4 bytes a number, and 1 MB for the rest."""
    copies = 4 + (request.train_config.accumulation_steps > 1)
    return 4 * copies * parameter_count(effective_model_config(request)) + 1_000_000


def plan_request(request: TrainingRequest, training_bytes: int) -> TrainingRequest:
    """Refuse at once, in plain words, a training that could only fail later (ValueError); else the request with
    its batch split into as many steps as `training_bytes` of memory need (the same training, in smaller steps)."""
    from musicgen.dataset import window_starts
    from musicgen.settings import fine_tuning

    corpus, config = request.corpus, request.train_config
    if not corpus.scores:
        raise ValueError("none of your files can be used for training: upload at least one MIDI file with notes")
    tokens = training_tokens(request)
    if tokens < config.sequence_length + 2:
        raise ValueError(
            f"the training music is too short for a sequence length of {config.sequence_length}: "
            f"it has {tokens} tokens; add files or lower the sequence length"
        )
    windows = len(window_starts(tokens, config.sequence_length, max(1, config.sequence_length // 2)))
    if request.start_from is not None:  # learned on top of a trained model: its own settings and time budget
        config = fine_tuning(config, windows)
    model = effective_model_config(request)
    batch = min(config.batch_size, windows)
    steps = memory.accumulation_steps(model, batch, config.sequence_length, tokens, training_bytes)
    if steps == 0:
        raise ValueError(
            f"this training needs more memory than the {training_bytes // memory.MEGABYTE} MB this server has for "
            "training, even one window at a time: lower the sequence length or the model size"
        )
    peak = memory.training_bytes(model, batch // steps, config.sequence_length, tokens, steps > 1)
    planned = replace(config, batch_size=batch, accumulation_steps=steps)
    return replace(request, train_config=planned, memory_bytes=peak)


def training_tokens(request: TrainingRequest) -> int:
    """Tokens of the music the run trains on (the validation files left out)."""
    from musicgen.bundle import read_info
    from musicgen.dataset import split_by_file

    config = request.train_config
    vocabulary = read_info(Path(request.start_from))[0].vocabulary if request.start_from else NEW_MODEL_VOCABULARY
    train_part, _ = split_by_file(corpus_to_ids(request.corpus, vocabulary), config.validation_share, config.seed)
    return sum(len(ids) for ids in train_part)


class TrainingQueue:
    """Runs jobs in worker threads, at most `max_running` at once and only while their expected peaks together
    fit in `memory_bytes` (None: no memory limit); the others wait in order."""

    def __init__(self, max_running: int = 1, memory_bytes: int | None = None):
        self.max_running, self.memory_bytes = max_running, memory_bytes
        self._condition = threading.Condition()
        self._waiting: list[TrainingJob] = []
        self._running: list[TrainingJob] = []

    def submit(self, job: TrainingJob) -> TrainingJob:
        """Queue the job and start its worker thread (which waits for its turn); ValueError when the queue is full."""
        with self._condition:
            if len(self._waiting) >= MAX_WAITING:
                raise ValueError(f"{MAX_WAITING} trainings are already waiting here: please try again in a while")
            self._waiting.append(job)
            job._place = lambda: self.place(job)
        threading.Thread(target=self._work, args=(job,), name=f"musicgen-training-{job.number}", daemon=True).start()
        return job

    def place(self, job: TrainingJob) -> int:
        """1 for the next job to start, 2 for the one after...; 0 when the job is not waiting."""
        with self._condition:
            return self._waiting.index(job) + 1 if job in self._waiting else 0

    def active_owners(self) -> set[str]:
        """Session ids with a job queued or running."""
        with self._condition:
            return {job.owner for job in self._waiting + self._running}

    def _work(self, job: TrainingJob) -> None:
        if not self._wait_for_turn(job):
            job._update(state="stopped", message="Stopped before it started: it left the queue.")
            return
        try:
            job.run()
        finally:
            with self._condition:
                self._running.remove(job)
                self._condition.notify_all()

    def _wait_for_turn(self, job: TrainingJob) -> bool:
        """Block until the job is first in line and a place is free; False if it was stopped first."""
        with self._condition:
            while not (self._waiting[0] is job and self._room_for(job)):
                if job.stop_requested():  # under the queue's lock: never the pause of should_stop
                    self._waiting.remove(job)
                    self._condition.notify_all()
                    return False
                self._condition.wait(timeout=1.0)
            self._waiting.pop(0)
            self._running.append(job)
            self._condition.notify_all()
            return True

    def _room_for(self, job: TrainingJob) -> bool:
        """True when a place is free and the job's memory fits beside the running ones' (call holding the lock)."""
        if len(self._running) >= self.max_running:
            return False
        in_use = sum(running.memory_bytes for running in self._running)
        return self.memory_bytes is None or in_use + job.memory_bytes <= self.memory_bytes
