"""The training path: chosen from CPU flags, measured by a real probe where it depends on the machine, cached."""

import json

import pytest

from musicgen import training_path
from musicgen.training_path import TrainingPath, bfloat16_is_native, candidates, fastest_path, machine_key, probe


def test_bfloat16_is_a_candidate_only_where_the_cpu_multiplies_it_natively(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert {path.precision for path in candidates({"avx2", "fma"})} == {"float32"}
    assert candidates({"avx2", "avx512f", "avx512_bf16"})[0] == TrainingPath("bfloat16", fast_loop=True)
    assert bfloat16_is_native({"amx_bf16"})


def test_capping_onednn_below_bfloat16_leaves_the_float32_paths(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not bfloat16_is_native({"avx2", "avx512f", "avx512_bf16"})
    assert {path.precision for path in candidates({"avx512_bf16"})} == {"float32"}


def test_a_cached_probe_decides_without_measuring_again(monkeypatch, tmp_path):
    monkeypatch.setenv(training_path.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setattr(training_path, "candidates", lambda flags=None: [TrainingPath(), TrainingPath(fast_loop=False)])
    ranking = [{"precision": "float32", "fast_loop": False}, {"precision": "float32", "fast_loop": True}]
    (tmp_path / "training-path.json").write_text(json.dumps({machine_key(): ranking}))
    assert fastest_path("auto") == TrainingPath("float32", fast_loop=False)
    assert fastest_path("float32") == TrainingPath("float32", fast_loop=False)


def test_bfloat16_asked_for_where_it_is_emulated_still_runs(monkeypatch):
    monkeypatch.setattr(training_path, "candidates", lambda flags=None: [TrainingPath()])
    assert fastest_path("bfloat16") == TrainingPath("bfloat16")
    assert fastest_path("auto") == TrainingPath()


@pytest.mark.parametrize("paths", [[TrainingPath("float32", True), TrainingPath("float32", False)]])
def test_the_probe_trains_every_candidate_and_ranks_them_all(paths):
    ranked = probe(paths)
    assert sorted(map(json.dumps, ranked)) == sorted(json.dumps(vars(path)) for path in paths)
