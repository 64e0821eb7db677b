"""Peak memory of the largest work the app admits, each in a fresh child process, against the budget.

    .venv/bin/python -m benchmarks.memory            # MUSICGEN_MEMORY_MB, default 2500

- the largest composition: the built-in model composing 4 variations of 120 s (the sliders'
  maximum) at every variations count, the pieces rendered by FluidSynth two at a time,
  against the process's share (base, composing and renders);
- the largest admitted training: the sliders at their maximum (3 layers x 512 units,
  sequence length 512, batch 64) on the 348 chorales (which fill every batch), planned by
  musicgen.jobs into as many gradient-accumulation steps as the training share needs,
  against its estimate and that share;
- the largest admitted model (musicgen.boundary.MAX_MODEL_PARAMETERS): held loaded for
  composing, against its estimate and the models' share, and trained further with
  the longest sequence the sliders offer.

Memory does not depend on what else runs on the machine, so these figures hold on a busy one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from musicgen import memory
from musicgen.boundary import MAX_MODEL_PARAMETERS, parameter_count
from musicgen.settings import ModelConfig
from musicgen.tokens import Vocabulary
from tests.memory_probe import REPOSITORY, make_model_folder, measure

MB = memory.MEGABYTE


def main() -> None:
    budget = memory.MemoryBudget.from_environment()
    print(
        f"budget {budget.total_megabytes} MB: training share {budget.training_megabytes} MB, "
        f"models {budget.model_megabytes} MB, {budget.renders} renders of {memory.RENDER_MEGABYTES} MB"
    )
    composition(budget)
    largest = largest_model()
    training(
        budget,
        ModelConfig(layers=3, units=512, embedding_size=64, vocabulary_size=len(Vocabulary())),
        "sliders at maximum",
    )
    with tempfile.TemporaryDirectory() as folder:
        make_model_folder(largest, Path(folder) / "largest")
        held = measure(
            "composer",
            {"model_folder": str(Path(folder) / "largest"), "variations": 4, "seconds": 120, "renders": budget.renders},
        )
    print(
        f"largest model ({parameter_count(largest):,} parameters) held: {held['held'] / MB:.0f} MB, "
        f"estimate {held['estimate'] / MB:.0f} MB, models' share {budget.model_megabytes} MB"
    )
    training(budget, largest, "the largest model trained further")


def composition(budget: memory.MemoryBudget) -> None:
    result = measure(
        "composer",
        {
            "model_folder": str(REPOSITORY / "checkpoints" / "bach"),
            "variations": 4,
            "seconds": 120,
            "renders": budget.renders,
        },
    )
    share = memory.BASE_MEGABYTES + memory.COMPOSE_MEGABYTES + budget.renders * memory.RENDER_MEGABYTES
    print(
        f"largest composition (4 x 120 s, renders {budget.renders} at once): peak {result['peak'] / MB:.0f} MB "
        f"with FluidSynth (its processes held at most {result['children'] / MB:.0f} MB at once), "
        f"against base + composing + renders {share} MB"
    )


def training(budget: memory.MemoryBudget, model: ModelConfig, title: str) -> None:
    train = {"epochs": 1, "sequence_length": 512, "batch_size": 64}
    settings = {"model": model.to_dict(), "train": train, "training_bytes": budget.training_bytes, "batches": 2}
    result = measure("training", settings)
    used = result["peak"] - result["before"]
    print(
        f"{title}: batch {result['batch_size']} in {result['accumulation_steps']} steps, peak +{used / MB:.0f} MB, "
        f"estimate {result['estimate'] / MB:.0f} MB, training share {budget.training_megabytes} MB "
        f"({used / result['estimate']:.2f} of the estimate), {result['seconds']:.0f} s for 2 batches"
    )


def largest_model() -> ModelConfig:
    """The widest 3-layer model of embedding 64 under MAX_MODEL_PARAMETERS."""
    vocabulary_size = len(Vocabulary())
    units = max(
        u for u in range(8, 1025, 8) if parameter_count(ModelConfig(vocabulary_size, 64, 3, u)) <= MAX_MODEL_PARAMETERS
    )
    return ModelConfig(vocabulary_size=vocabulary_size, embedding_size=64, layers=3, units=units)


if __name__ == "__main__":
    main()
