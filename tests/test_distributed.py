"""Multi-worker training for real: worker processes on localhost with TF_CONFIG, tiny models, a few steps."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from musicgen import cli, distributed
from musicgen.bundle import load_bundle, read_history
from musicgen.settings import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--layers", "1", "--units", "16", "--embedding-size", "8", "--sequence-length", "32", "--batch-size", "8"]
ENVIRONMENT = {**os.environ, "PYTHONPATH": str(ROOT), **distributed.thread_environment(1)}


def musicgen(*arguments, cwd: Path, **environment) -> subprocess.CompletedProcess:
    """Run the command line as a user does and wait for it."""
    command = [sys.executable, "-m", "musicgen", *map(str, arguments)]
    return subprocess.run(
        command, cwd=cwd, env={**ENVIRONMENT, **environment}, capture_output=True, text=True, timeout=300
    )


def start_workers(*arguments, cwd: Path) -> list[subprocess.Popen]:
    """Two processes of `musicgen` joined by TF_CONFIG, as on two hosts."""
    command = [sys.executable, "-m", "musicgen", *map(str, arguments)]
    return [
        subprocess.Popen(command, cwd=cwd, env={**ENVIRONMENT, "TF_CONFIG": config}, stdout=subprocess.PIPE, text=True)
        for config in distributed.local_tf_configs(2)
    ]


def digest(output: str) -> str:
    """The weights digest a worker prints at the end."""
    return next(line for line in output.splitlines() if line.startswith("worker ")).split("weights ")[1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A working folder holding 24 bundled chorales in chorales/."""
    folder = tmp_path_factory.mktemp("distributed")
    (folder / "chorales").mkdir()
    for path in sorted((ROOT / "samples" / "bach").glob("*.mid"))[:24]:
        shutil.copy(path, folder / "chorales")
    return folder


@pytest.fixture(scope="module")
def two_workers(folder) -> subprocess.CompletedProcess:
    """`musicgen train --workers 2` for 2 epochs, the model copied to two/."""
    result = musicgen("train", "chorales", "--epochs", 2, *TINY, "--workers", 2, "--out", "two", cwd=folder)
    assert result.returncode == 0, result.stderr
    return result


def test_two_workers_end_with_the_same_weights_and_write_a_bundle(folder, two_workers):
    assert "epoch 2/2" in two_workers.stdout and "copied to two" in two_workers.stdout
    other_worker = (folder / "runs" / "worker-logs" / "worker-1.log").read_text()
    assert digest(two_workers.stdout) == digest(other_worker)
    assert "epoch" not in other_worker  # only the chief reports
    bundle = load_bundle(folder / "two")
    assert len(bundle.history) == 2 and not (folder / "two" / "backup").exists()
    result = musicgen("generate", "two", "--out", "piece.mid", "--seconds", 5, cwd=folder)
    assert result.returncode == 0, result.stderr


def test_two_workers_learn_as_one_process_does_in_the_same_run_folder(folder, two_workers):
    result = musicgen("train", "chorales", "--epochs", 2, *TINY, "--runs", "single", cwd=folder)
    assert result.returncode == 0, result.stderr
    (single,) = (folder / "single").iterdir()
    assert (folder / "runs" / single.name).is_dir()  # the same name: corpus fingerprint and settings
    for one, two in zip(read_history(single), read_history(folder / "two"), strict=True):
        assert one["loss"] == pytest.approx(two["loss"], abs=0.1)
        assert one["validation_loss"] == pytest.approx(two["validation_loss"], abs=0.1)


def test_a_run_whose_worker_dies_resumes_from_the_last_checkpoint(folder):
    arguments = ["train", "chorales", "--epochs", 4, *TINY, "--runs", "killed", "--checkpoint-steps", 5]
    workers = start_workers(*arguments, cwd=folder)
    while not list((folder / "killed").glob("*/backup/workers/checkpoint.npz")):
        assert workers[0].poll() is None, "the run ended before a checkpoint"
        time.sleep(0.02)
    workers[1].send_signal(signal.SIGKILL)
    workers[0].communicate(timeout=60)
    assert workers[0].returncode != 0  # the chief fails instead of waiting for ever
    (checkpoint,) = (folder / "killed").glob("*/backup/workers/checkpoint.npz")
    with np.load(checkpoint) as saved:
        saved_step = int(saved["step"])
    outputs = [worker.communicate(timeout=120)[0] for worker in start_workers(*arguments, cwd=folder)]
    assert f"resumed the earlier run at step {saved_step}" in outputs[0]
    assert saved_step > 0 and digest(outputs[0]) == digest(outputs[1])
    steps = int(outputs[0].split("step ")[1].split(",")[0])
    assert len(read_history(checkpoint.parent.parent.parent)) == 4 and steps % 4 == 0


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("{not json", "must be JSON"),
        ('{"task": {"index": 0}}', "must be JSON"),
        ('{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}}', "only workers"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "only workers"),
        ('{"cluster": {"worker": ["a"]}}', "'host:port'"),
        ('{"cluster": {"worker": ["a:99999"]}}', "'host:port'"),
        ('{"cluster": {"worker": []}}', "1 to 1024"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "from 0 to 1"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": true}}', "whole number"),
    ],
)
def test_an_unusable_tf_config_is_refused_in_one_sentence(tf_config, message):
    with pytest.raises(ValueError, match=message):
        distributed.cluster_from_tf_config(tf_config)


def test_a_tf_config_names_the_workers_and_this_one():
    config = json.loads(distributed.local_tf_configs(3)[2])
    cluster = distributed.cluster_from_tf_config(json.dumps(config))
    assert cluster.index == 2 and not cluster.is_chief and len(set(cluster.workers)) == 3
    assert distributed.cluster_from_tf_config("") is None and distributed.cluster_from_tf_config(None) is None


@pytest.mark.parametrize(("value", "message"), [("0", "from 1 to 64"), ("65", "from 1 to 64"), ("two", "whole number")])
def test_a_bad_worker_count_is_refused(value, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "music", "--workers", value])
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--threads-per-worker", "--checkpoint-steps"])
def test_a_count_below_one_is_refused(option, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["train", "music", "--workers", "2", option, "0"])
    assert exit.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_workers_and_tf_config_together_are_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TF_CONFIG", distributed.local_tf_configs(1)[0])
    monkeypatch.delenv(distributed.LOCAL_WORKER_VARIABLE, raising=False)
    assert cli.main(["train", str(tmp_path), "--workers", "2"]) == 1
    assert "leave out --workers" in capsys.readouterr().err


def test_an_epoch_is_the_windows_of_the_training_files_over_the_batch():
    config = TrainConfig(sequence_length=32, batch_size=8)
    assert distributed.steps_per_epoch(16 * 100 + 33, config) == 101 // 8
    with pytest.raises(ValueError, match="too short"):
        distributed.steps_per_epoch(100, config)
