"""Generation speed: our NumPy sampler (nothing to compile) against the naive `model.predict` loop, same model.

Run: .venv/bin/python -m benchmarks.sampling_speed [BUNDLE]   (default: the shipped model, or an untrained 2 x 256 one)
"""

import sys
import time
from pathlib import Path

import numpy as np

from musicgen.bundle import load_bundle
from musicgen.model import ModelConfig, build_model
from musicgen.sample import SampleConfig, Sampler
from musicgen.tokens import START, Vocabulary

SEQUENCE_LENGTH = 128  # window the naive loop predicts over, as in the well-known tutorials
NAIVE_TOKENS = 100


def model_and_vocabulary(path: Path | None):
    if path is not None and (path / "model.weights.h5").exists():
        bundle = load_bundle(path)
        return bundle.model, bundle.info.vocabulary, path.name
    vocabulary = Vocabulary()
    return build_model(ModelConfig(vocabulary_size=len(vocabulary))), vocabulary, "untrained 2 x 256"


def sampler_ms_per_token(sampler: Sampler, variations: int = 1) -> tuple[float, int]:
    """Best of three: milliseconds per generated token, and the tokens of a run (all variations)."""
    config = SampleConfig(max_seconds=600, max_notes=5000, seed=1, variations=variations)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        pieces = sampler.generate(config)
        elapsed = time.perf_counter() - started
        tokens = sum(len(piece) - 1 for piece in pieces)
        best = min(best, elapsed * 1000 / tokens)
    return best, tokens


def naive_ms_per_token(model, vocabulary_size: int) -> float:
    """The tutorial loop: predict over the last window for every new token, sample from the softmax."""
    rng = np.random.default_rng(0)
    ids = [START]
    model.predict(np.array([ids[-SEQUENCE_LENGTH:]]), verbose=0)  # compile
    started = time.perf_counter()
    for _ in range(NAIVE_TOKENS):
        logits = model.predict(np.array([ids[-SEQUENCE_LENGTH:]]), verbose=0)[0, -1]
        probabilities = np.exp(logits - logits.max())
        ids.append(int(rng.choice(vocabulary_size, p=probabilities / probabilities.sum())))
    return (time.perf_counter() - started) * 1000 / NAIVE_TOKENS


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("checkpoints/bach")
    model, vocabulary, name = model_and_vocabulary(path)
    started = time.perf_counter()
    sampler = Sampler(model, vocabulary)
    first = sampler.generate(SampleConfig(max_seconds=30, seed=1))[0]
    print(f"first piece of 30 s ({len(first)} tokens) {time.perf_counter() - started:.3f} s after loading the weights")
    ours, tokens = sampler_ms_per_token(sampler)
    for variations in (4, 8):
        batched, _ = sampler_ms_per_token(sampler, variations)
        print(f"{variations} pieces in one batch: {batched:.3f} ms per token")
    naive = naive_ms_per_token(model, len(vocabulary))
    print(f"model: {name}; sampler measured on {tokens} tokens, naive loop on {NAIVE_TOKENS}")
    print(f"sampler {ours:.3f} ms/token, naive predict {naive:.1f} ms/token: {naive / ours:,.0f}x faster")


if __name__ == "__main__":
    main()
