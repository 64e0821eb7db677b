"""The memory budget: estimates against real peaks, plans that fit, a queue that waits for memory."""

import itertools
import threading
import time

import pytest

from musicgen import jobs, memory
from musicgen.corpus import MAX_CORPUS_TOKENS, load_folder
from musicgen.settings import ModelConfig, TrainConfig
from musicgen.tokens import Vocabulary
from tests.memory_probe import REPOSITORY, measure

VOCABULARY_SIZE = len(Vocabulary())
BUDGET = memory.MemoryBudget()


@pytest.fixture(scope="module")
def chorales():
    return load_folder(REPOSITORY / "samples" / "bach")


def test_the_largest_admitted_training_peaks_under_its_estimate_and_within_the_training_share():
    """Sliders at their maximum on the 348 chorales (every batch full), in a fresh process, one whole batch."""
    largest = {"layers": max(jobs.LAYER_CHOICES), "units": max(jobs.UNIT_CHOICES), "embedding_size": 64}
    train = {"epochs": 1, "sequence_length": max(jobs.SEQUENCE_LENGTH_CHOICES), "batch_size": 64}
    result = measure(
        "training",
        {
            "model": {**largest, "vocabulary_size": VOCABULARY_SIZE},
            "train": train,
            "training_bytes": BUDGET.training_bytes,
            "batches": 1,
        },
    )
    assert result["accumulation_steps"] > 1  # the whole batch at once would need several GB
    assert result["peak"] - result["before"] <= result["estimate"] <= BUDGET.training_bytes


def test_every_combination_the_sliders_offer_can_run_within_the_default_budget(chorales):
    for layers, units, length in itertools.product(jobs.LAYER_CHOICES, jobs.UNIT_CHOICES, jobs.SEQUENCE_LENGTH_CHOICES):
        model = ModelConfig(vocabulary_size=VOCABULARY_SIZE, layers=layers, units=units, embedding_size=64)
        steps = memory.accumulation_steps(model, 64, length, MAX_CORPUS_TOKENS, BUDGET.training_bytes)
        assert steps >= 1, (layers, units, length)
        assert memory.training_bytes(model, 64 // steps, length, MAX_CORPUS_TOKENS, steps > 1) <= BUDGET.training_bytes


def test_a_training_that_fits_is_left_as_asked_and_a_big_one_is_split(chorales):
    small = jobs.TrainingRequest(chorales, ModelConfig(layers=1, units=32), TrainConfig(sequence_length=32))
    assert jobs.plan_request(small, BUDGET.training_bytes).train_config == small.train_config
    big = jobs.TrainingRequest(chorales, ModelConfig(layers=3, units=512), TrainConfig(sequence_length=512))
    planned = jobs.plan_request(big, BUDGET.training_bytes)
    assert planned.train_config.accumulation_steps > 1
    assert planned.train_config.batch_size == 64
    assert 0 < planned.memory_bytes <= BUDGET.training_bytes


def test_a_training_that_cannot_fit_even_one_window_at_a_time_is_refused_in_one_sentence(chorales):
    huge = jobs.TrainingRequest(chorales, ModelConfig(layers=4, units=1024), TrainConfig(sequence_length=2048))
    with pytest.raises(ValueError, match="lower the sequence length or the model size$"):
        jobs.plan_request(huge, BUDGET.training_bytes)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "MUSICGEN_MEMORY_MB must be a whole number from 1,500 to 1,000,000, got 'lots'"),
        ("-5", "MUSICGEN_MEMORY_MB must be a whole number"),
        ("1000", "MUSICGEN_MEMORY_MB must be a whole number from 1,500 to 1,000,000, got '1000'"),
        ("1600", "cannot be used: 1600 MB is too little for the app and a training: give at least 2150$"),
    ],
)
def test_an_unusable_memory_setting_is_refused_naming_the_variable(value, message):
    with pytest.raises(ValueError, match=message):
        memory.MemoryBudget.from_environment({"MUSICGEN_MEMORY_MB": value})


def test_the_memory_setting_sizes_the_training_share():
    assert memory.MemoryBudget.from_environment({}).training_megabytes == 650
    assert memory.MemoryBudget.from_environment({"MUSICGEN_MEMORY_MB": "4000"}).training_megabytes == 2150


class FakeJob:
    """What the queue reads of a job (a real TrainingJob reads music and trains TensorFlow models)."""

    def __init__(self, memory_bytes: int):
        self.memory_bytes, self.owner, self.number = memory_bytes, "visitor", 0
        self.ran, self.release = threading.Event(), threading.Event()
        self.stopped_at = None

    def stop_requested(self) -> bool:
        return False

    def run(self) -> None:
        self.ran.set()
        self.release.wait(10)

    def _update(self, **changes) -> None:
        self.stopped_at = changes


def test_the_queue_starts_a_training_only_when_its_memory_fits_beside_the_running_ones():
    queue = jobs.TrainingQueue(max_running=4, memory_bytes=1000)
    first, second, third = FakeJob(600), FakeJob(600), FakeJob(300)
    for job in (first, second, third):
        queue.submit(job)
    assert first.ran.wait(5)
    time.sleep(0.3)
    assert not second.ran.is_set() and queue.place(second) == 1
    assert not third.ran.is_set() and queue.place(third) == 2  # in order: it waits behind the second
    first.release.set()
    assert second.ran.wait(5) and third.ran.wait(5)
    second.release.set()
    third.release.set()


def test_the_queue_refuses_a_training_when_it_is_full_in_one_sentence():
    queue = jobs.TrainingQueue(max_running=1)
    running = FakeJob(0)
    queue.submit(running)
    assert running.ran.wait(5)
    waiting = [queue.submit(FakeJob(0)) for _ in range(jobs.MAX_WAITING)]
    with pytest.raises(ValueError, match=f"^{jobs.MAX_WAITING} trainings are already waiting here"):
        queue.submit(FakeJob(0))
    for job in [running, *waiting]:
        job.release.set()
    assert all(job.ran.wait(5) for job in waiting)
