"""Training on several processes or hosts with tf.distribute.MultiWorkerMirroredStrategy.

Every worker runs the same program; TF_CONFIG says where the others are and which one it is.
Stock `model.fit` cannot train under this strategy with two workers on Keras 3
(keras-team/keras#20585), so the step is written here: `strategy.run` on each worker's
batch, the loss scaled by the global batch, gradients summed across workers, clipped like
the single-process optimizer's `clipnorm`, and applied by the Keras optimizer built in the
strategy's scope. One distributed iterator serves the whole run (a new one per epoch
stalls for seconds); an epoch is a count of steps.

Only the chief (worker 0) writes: the run folder is the single-process run's (musicgen.train
names it, musicgen.bundle writes it), plus backup/workers/checkpoint.npz (weights, optimizer
state, step) every `checkpoint_steps` steps and after every epoch. When a worker dies the
others fail; launched again, the chief reads the checkpoint and sends it to every worker,
and the run goes on from the same optimizer step with the same batches.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from musicgen import bundle, token_cache
from musicgen.settings import EpochReport, ModelConfig, TrainConfig
from musicgen.tokens import Vocabulary

LOCAL_WORKER_VARIABLE = "MUSICGEN_LOCAL_WORKER"  # "1" in the processes that --workers starts
MAX_WORKERS = 64  # processes --workers may start on one machine
CHECKPOINT_FILE = Path("backup") / "workers" / "checkpoint.npz"  # in the run folder; backup/ never goes in a zip
GRADIENT_CLIP_NORM = 1.0  # as musicgen.train's optimizer (clipnorm), applied after the gradients are summed


# --- the cluster ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """The workers of one training, as TF_CONFIG gives them, and which of them this process is."""

    workers: tuple[str, ...]  # "host:port" of each worker; worker 0 is the chief
    index: int  # this process's place in `workers`

    @property
    def is_chief(self) -> bool:
        """True for the one worker that writes the run folder."""
        return self.index == 0


def cluster_from_tf_config(text: str | None) -> Cluster | None:
    """The cluster described by a TF_CONFIG value; None when it is unset or empty; ValueError when unusable."""
    if not text:
        return None
    try:
        config = json.loads(text)
        workers, task = config["cluster"]["worker"], config.get("task", {})
        index, task_type = task.get("index", 0), task.get("type", "worker")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, "task": ...}'
        ) from None
    if set(config["cluster"]) - {"worker"} or task_type != "worker":
        raise ValueError("TF_CONFIG may name only workers (the first is the chief), not chief, ps or evaluator tasks")
    if not isinstance(workers, list) or not 1 <= len(workers) <= 1024 or not all(map(_is_address, workers)):
        raise ValueError("TF_CONFIG's cluster.worker must be a list of 1 to 1024 'host:port' addresses")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(workers):
        raise ValueError(f"TF_CONFIG's task.index must be a whole number from 0 to {len(workers) - 1}")
    return Cluster(tuple(workers), index)


def _is_address(value: object) -> bool:
    """True for 'host:port' with a port from 1 to 65535."""
    if not isinstance(value, str) or value.count(":") != 1:
        return False
    host, port = value.split(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


def check_worker_count(workers: int) -> int:
    """The number of local workers asked for, or ValueError."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be from 1 to {MAX_WORKERS}, not {workers}")
    return workers


def local_tf_configs(workers: int) -> list[str]:
    """A TF_CONFIG for each of `workers` processes on this machine, on ports free now."""
    addresses = [f"localhost:{port}" for port in free_ports(workers)]
    return [
        json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}}) for i in range(workers)
    ]


def free_ports(count: int) -> list[int]:
    """Ports that nothing listens on now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for listener in sockets:
            listener.bind(("localhost", 0))
        return [listener.getsockname()[1] for listener in sockets]
    finally:
        for listener in sockets:
            listener.close()


# --- starting local workers -------------------------------------------------------------


def launch_local_workers(arguments: Sequence[str], workers: int, threads: int, log_dir: Path) -> None:
    """Run `python -m musicgen <arguments>` as `workers` processes on this machine; RuntimeError when one fails.

    Each process gets TF_CONFIG and `threads` TensorFlow threads, so that workers do not oversubscribe the
    cores. The chief prints to this terminal, the others to worker-<i>.log in `log_dir`; when one fails, the
    others are ended.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = [None] + [log_dir / f"worker-{index}.log" for index in range(1, workers)]
    processes = [
        _start_worker(arguments, config, threads, log)
        for config, log in zip(local_tf_configs(workers), logs, strict=True)
    ]
    try:
        failed = _wait_for_all(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    if failed is not None:
        where = f"; its output is in {logs[failed[0]]}" if failed[0] else ""
        raise RuntimeError(
            f"worker {failed[0]} stopped with exit code {failed[1]}{where}; "
            "run the same command again to go on from the last checkpoint"
        )


def _start_worker(arguments: Sequence[str], tf_config: str, threads: int, log: Path | None) -> subprocess.Popen:
    """One worker process; its output goes to `log`, or to this terminal for the chief."""
    environment = {**os.environ, "TF_CONFIG": tf_config, LOCAL_WORKER_VARIABLE: "1", **thread_environment(threads)}
    command = [sys.executable, "-m", "musicgen", *arguments]
    if log is None:
        return subprocess.Popen(command, env=environment)
    with open(log, "wb") as output:  # the child keeps its own copy open
        return subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that give a TensorFlow process `threads` compute threads (read when TF starts)."""
    return {
        "TF_NUM_INTRAOP_THREADS": str(threads),
        "TF_NUM_INTEROP_THREADS": str(max(2, threads)),  # collectives wait on this pool: 1 can deadlock
        "OMP_NUM_THREADS": str(threads),
    }


def _wait_for_all(processes: list[subprocess.Popen]) -> tuple[int, int] | None:
    """Wait until every process ends, or one fails: (its index, its exit code), or None when all succeed."""
    while True:
        codes = [process.poll() for process in processes]
        for index, code in enumerate(codes):
            if code not in (None, 0):
                return index, code
        if all(code == 0 for code in codes):
            return None
        time.sleep(0.2)


# --- training ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerRun:
    """What one training needs that is the same on every worker."""

    cached: token_cache.CachedCorpus
    run_dir: Path
    info: bundle.BundleInfo
    steps_per_epoch: int
    checkpoint_steps: int  # the chief saves a checkpoint after this many steps (and after every epoch)


@dataclass(frozen=True)
class WorkerResult:
    """How a call to `train_workers` ended."""

    run_dir: Path
    resumed_from_step: int  # 0 for a fresh run
    steps_done: int  # optimizer steps of the run, resumed ones included
    epochs_done: int
    tokens_per_second: float  # of all workers together, over this call's steps but the first
    weights_digest: str  # sha256 of the model's weights on this worker: the same on every worker


def train_workers(
    cached: token_cache.CachedCorpus,
    runs_root: Path,
    model_config: ModelConfig = ModelConfig(),
    train_config: TrainConfig = TrainConfig(),
    vocabulary: Vocabulary = Vocabulary(),
    on_epoch: Callable[[EpochReport], None] | None = None,
    checkpoint_steps: int = 200,
) -> WorkerResult:
    """Train (or resume) the run for this corpus and settings on the cluster in TF_CONFIG (or alone without it)."""
    from musicgen.dataset import split_by_file
    from musicgen.train import run_folder

    cluster = cluster_from_tf_config(os.environ.get("TF_CONFIG")) or Cluster(("localhost:0",), 0)
    model_config = replace(model_config, vocabulary_size=len(vocabulary))
    if train_config.accumulation_steps != 1:
        raise ValueError("training on several workers does not accumulate gradients; use more workers instead")
    info = bundle.BundleInfo(model_config, vocabulary, cached.fingerprint, list(cached.names), train_config)
    run_dir = run_folder(runs_root, cached.fingerprint, model_config, train_config)
    train_part, _ = split_by_file(list(cached.shards), train_config.validation_share, train_config.seed)
    steps = steps_per_epoch(sum(shard.token_count for shard in train_part), train_config)
    run = WorkerRun(cached, run_dir, info, steps, checkpoint_steps)
    return _Trainer(run, cluster).train(on_epoch)


def steps_per_epoch(train_tokens: int, config: TrainConfig) -> int:
    """Optimizer steps in one pass over the training windows (overlapping by half, as musicgen.dataset cuts them)."""
    stride = max(1, config.sequence_length // 2)
    windows = max(0, (train_tokens - config.sequence_length - 1) // stride + 1)
    if windows < config.batch_size:
        raise ValueError(
            f"the training music is too short: {windows} windows of {config.sequence_length} tokens cannot make "
            f"one batch of {config.batch_size}; add files or lower the sequence length or batch size"
        )
    return windows // config.batch_size


class _Trainer:
    """The model, optimizer, data and loop of one worker."""

    def __init__(self, run: WorkerRun, cluster: Cluster):
        import keras
        import tensorflow as tf

        from musicgen.dataset import split_by_file
        from musicgen.model import build_model
        from musicgen.train import compute_dtype

        self.run, self.cluster, self.config = run, cluster, run.info.train_config
        self.strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: it configures TensorFlow's collectives
        if self.config.batch_size % self.strategy.num_replicas_in_sync:
            raise ValueError(
                f"a batch of {self.config.batch_size} cannot be split evenly over {len(cluster.workers)} workers"
            )
        keras.utils.set_random_seed(self.config.seed)
        with self.strategy.scope():
            self.model = build_model(run.info.model_config, compute_dtype(self.config.precision))
            self.optimizer = keras.optimizers.Adam(self.config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
        self.per_token_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
        self._validation_sums, self._all_reduce = self._make_validation_sums(), self._make_sum_over_workers()
        self.train_part, self.validation_part = split_by_file(
            [shard.path for shard in run.cached.shards], self.config.validation_share, self.config.seed
        )
        if len(self.train_part) < len(cluster.workers):
            raise ValueError(
                f"{len(cluster.workers)} workers need at least as many training files, not {len(self.train_part)}"
            )

    @property
    def variables(self) -> list:
        """Everything a checkpoint holds: the model's weights, then the optimizer's state."""
        return list(self.model.weights) + list(self.optimizer.variables)

    def train(self, on_epoch: Callable[[EpochReport], None] | None) -> WorkerResult:
        """Run the steps that remain; the chief records every epoch and writes the checkpoints."""
        run = self.run
        self._check_same_music()
        resumed_step, epoch_loss = self._restore()
        history = self._history_until(resumed_step)
        batches = self.strategy.distribute_datasets_from_function(lambda context: self._batches(context, resumed_step))
        iterator, train_step = iter(batches), self._train_step()
        step, last_step = resumed_step, self.config.epochs * run.steps_per_epoch
        epoch_started = timed_from = time.perf_counter()
        while step < last_step:
            epoch_loss += float(train_step(iterator))
            step += 1
            if step == resumed_step + 1:
                timed_from = time.perf_counter()  # the first step also builds the graph: not timed
            if step % run.steps_per_epoch == 0:
                self._end_epoch(step, epoch_loss, time.perf_counter() - epoch_started, history, on_epoch)
                epoch_loss, epoch_started = 0.0, time.perf_counter()
            if self.cluster.is_chief and (step % run.steps_per_epoch == 0 or step % run.checkpoint_steps == 0):
                self._save_checkpoint(epoch_loss)
        timed_tokens = max(0, step - resumed_step - 1) * self.config.batch_size * self.config.sequence_length
        speed = timed_tokens / max(time.perf_counter() - timed_from, 1e-9)
        return WorkerResult(run.run_dir, resumed_step, step, step // run.steps_per_epoch, speed, self.weights_digest())

    def _history_until(self, step: int) -> list[dict]:
        """The chief's history of the epochs finished by `step` (later ones did not happen); [] on other workers."""
        if not self.cluster.is_chief:
            return []
        bundle.write_info(self.run.run_dir, self.run.info)
        return bundle.read_history(self.run.run_dir)[: step // self.run.steps_per_epoch]

    def _batches(self, context, skip_steps: int):
        """This worker's share of every global batch: its own files, the batches already trained on skipped."""
        index, count = context.input_pipeline_id, context.num_input_pipelines
        tables = _transpose_tables(self.run.info.vocabulary, self.config.transpose_semitones)
        dataset = token_cache.windows_dataset(
            self.train_part[index::count],
            self.config.sequence_length,
            context.get_per_replica_batch_size(self.config.batch_size),
            self.config.seed,
            shuffle=True,
            transpose_tables=tables,
        )
        return dataset.skip(skip_steps)

    def _train_step(self):
        """One optimizer step on every worker at once; returns the mean loss per token of the global batch."""
        import tensorflow as tf

        variables = self.model.trainable_variables
        tokens_per_batch = self.config.batch_size * self.config.sequence_length
        replicas = self.strategy.num_replicas_in_sync

        def replica_step(inputs, targets):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(self.per_token_loss(targets, self.model(inputs, training=True))) / tokens_per_batch
            gradients = [tf.convert_to_tensor(gradient) for gradient in tape.gradient(loss, variables)]
            summed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            # Clipped after summing, as one process clips its whole batch; the optimizer sums the shares again.
            shares = [tf.clip_by_norm(gradient, GRADIENT_CLIP_NORM) / replicas for gradient in summed]
            self.optimizer.apply_gradients(zip(shares, variables, strict=False))
            return loss

        @tf.function
        def train_step(iterator):
            losses = self.strategy.run(replica_step, args=next(iterator))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return train_step

    def _end_epoch(self, step: int, epoch_loss: float, seconds: float, history: list[dict], on_epoch) -> None:
        """Validate on every worker; the chief records the epoch and keeps the best weights."""
        validation_loss = self._validation_loss()
        if not self.cluster.is_chief:
            return
        epoch = step // self.run.steps_per_epoch
        report = EpochReport(epoch, self.config.epochs, epoch_loss / self.run.steps_per_epoch, validation_loss, seconds)
        score = report.validation_loss if report.validation_loss is not None else report.loss
        if all(score < bundle.selection_loss(entry) for entry in history):
            bundle.write_weights(self.run.run_dir, self.model, self.run.info.model_config)
        history.append(asdict(report))
        bundle.write_history(self.run.run_dir, history)
        if on_epoch is not None:
            on_epoch(report)

    def _validation_loss(self) -> float | None:
        """Mean loss per token over the validation files, each worker scoring its share; None without any."""
        import tensorflow as tf

        if not self.validation_part:
            return None
        index, count = self.cluster.index, len(self.cluster.workers)
        mine = self.validation_part[index::count]
        sums = np.zeros(2)  # loss summed over tokens, tokens
        if mine:
            dataset = token_cache.windows_dataset(mine, self.config.sequence_length, self.config.batch_size, 0, False)
            for inputs, targets in dataset:
                sums += self._validation_sums(inputs, targets).numpy()
        (total,) = self._sum_over_workers([tf.constant(sums)])
        return float(total[0] / total[1]) if total[1] else None

    def _make_validation_sums(self):
        """A compiled function: (loss summed over tokens, tokens) of one batch, float64."""
        import tensorflow as tf

        @tf.function(reduce_retracing=True)  # the last batch is smaller
        def validation_sums(inputs, targets):
            losses = self.per_token_loss(targets, self.model(inputs, training=False))
            return tf.stack([tf.reduce_sum(tf.cast(losses, tf.float64)), tf.cast(tf.size(losses), tf.float64)])

        return validation_sums

    def _make_sum_over_workers(self):
        """A compiled function: the sum of each tensor of a list over all workers, on every worker."""
        import tensorflow as tf

        def replica_sum(values):
            local = [tf.identity(value) for value in values]  # placed on this replica's device
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)

        @tf.function
        def all_reduce(values):
            return self.strategy.run(replica_sum, args=(values,))

        return all_reduce

    def _sum_over_workers(self, values: list) -> list[np.ndarray]:
        """The sum of each float64 tensor over all workers, on every worker (one collective all-reduce)."""
        return [self.strategy.experimental_local_results(value)[0].numpy() for value in self._all_reduce(values)]

    def weights_digest(self) -> str:
        """sha256 of every weight of the model on this worker: the same on all workers after every step."""
        digest = hashlib.sha256()
        for weight in self.model.get_weights():
            digest.update(weight.tobytes())
        return digest.hexdigest()

    def _check_same_music(self) -> None:
        """ValueError on every worker unless all of them read the same files (their batches would not fit)."""
        import tensorflow as tf

        own = float(int(self.run.cached.fingerprint[:12], 16))  # 48 bits: exact in float64
        (total,) = self._sum_over_workers([tf.constant([own], tf.float64)])
        if total[0] != own * len(self.cluster.workers):
            raise ValueError("the workers were given different music: every worker needs the same MIDI files")

    def _restore(self) -> tuple[int, float]:
        """Give every worker the chief's checkpoint, if it has one: (optimizer step, loss summed so far this epoch)."""
        import tensorflow as tf

        variables, saved, epoch_loss = self.variables, None, 0.0
        checkpoint = self.run.run_dir / CHECKPOINT_FILE
        if self.cluster.is_chief and checkpoint.exists():
            with np.load(checkpoint) as arrays:
                saved = [arrays[f"variable_{i}"] for i in range(len(variables))]
                epoch_loss = float(arrays["epoch_loss"])
        own = saved if saved is not None else [variable.numpy() for variable in variables]
        weight = 1.0 if self.cluster.is_chief else 0.0  # every worker adds; only the chief's values count
        values = self._sum_over_workers([tf.constant(value, tf.float64) * weight for value in own])
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value.astype(variable.dtype))
        return int(self.optimizer.iterations.numpy()), epoch_loss

    def _save_checkpoint(self, epoch_loss: float) -> None:
        """Write every variable and the epoch's loss so far, atomically (the chief only)."""
        arrays = {f"variable_{i}": variable.numpy() for i, variable in enumerate(self.variables)}
        buffer = io.BytesIO()
        np.savez(buffer, step=self.optimizer.iterations.numpy(), epoch_loss=np.float64(epoch_loss), **arrays)
        token_cache.write_atomically(self.run.run_dir / CHECKPOINT_FILE, buffer.getvalue())


def _transpose_tables(vocabulary: Vocabulary, semitones: int) -> np.ndarray | None:
    """Id maps for every shift up to `semitones` either way, as musicgen.train augments; None for none."""
    if not semitones:
        return None
    return np.stack([vocabulary.transpose_table(shift) for shift in range(-semitones, semitones + 1)])
