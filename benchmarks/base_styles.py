"""One base model of all the built-in styles against each style's own model, on each style's held-out music.

    python -m benchmarks.base_styles [--base checkpoints/base]

For every built-in style, the files its own model was measured on (its evaluation.json's held-out files,
which `musicgen evaluate --style NAME` finds; the base never trained on them: scripts/train_base.py)
are scored by both models: nats per token, each in its own vocabulary (a chorale on the piano makes the
same tokens with or without instrument tokens; a quartet makes a few more with them, so its figure is per
token of each model's own encoding, and also given per note).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.airs import REPOSITORY
from musicgen.bundle import EVALUATION_FILE, load_bundle
from musicgen.corpus import load_paths
from musicgen.evaluate import lstm_likelihood
from musicgen.styles import built_in_styles
from musicgen.tokens import encode


def held_out_nll(model_folder: Path, scores) -> tuple[float, float]:
    """(nats per token, nats per note) of the scores under the model."""
    bundle = load_bundle(model_folder)
    ids = [np.asarray(encode(score, bundle.info.vocabulary), np.int32) for score in scores]
    likelihood = lstm_likelihood(bundle.model, ids)
    notes = sum(len(score.notes) for score in scores)
    return likelihood.nll_per_token, likelihood.nll_per_token * likelihood.tokens / notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, default=REPOSITORY / "checkpoints" / "base")
    arguments = parser.parse_args()
    print("style: held-out files; nats/token own model -> base (ratio); nats/note own model -> base")
    for style in built_in_styles():
        held_out = json.loads((style.model / EVALUATION_FILE).read_text())["held_out_files"]
        scores = load_paths([style.music / name for name in held_out]).scores
        own, base = held_out_nll(style.model, scores), held_out_nll(arguments.base, scores)
        print(
            f"{style.name}: {len(held_out)} files; {own[0]:.3f} -> {base[0]:.3f} ({base[0] / own[0]:.3f}x); "
            f"{own[1]:.3f} -> {base[1]:.3f}"
        )


if __name__ == "__main__":
    main()
