"""The command line: `python -m musicgen train | generate | styles | info | evaluate`.

A thin shell over the library, like the app; errors print one plain line and exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_RUNS = Path("runs")


def main(argv: list[str] | None = None) -> int:
    """Run one command; 0 on success, 1 on a user error, 2 on bad arguments."""
    arguments = _parser().parse_args(argv)
    arguments.argv = list(sys.argv[1:] if argv is None else argv)  # local workers run the same command
    try:
        if arguments.command not in (info_command, styles_command, generate_command):  # these need no TensorFlow
            _import_tensorflow_quietly()
        arguments.command(arguments)
    except KeyboardInterrupt:
        print("stopped; run the same command again to continue where it left off", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - the user gets one line, never a traceback
        print(f"error: {_plain(error)}", file=sys.stderr)
        return 1
    return 0


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (which ignore TF_CPP_MIN_LOG_LEVEL) kept off the terminal."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            import musicgen.model  # noqa: F401  (sets the backend, then imports keras and tensorflow)
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _plain(error: Exception) -> str:
    from musicgen.bundle import BundleError
    from musicgen.midi import MidiError

    if isinstance(error, MidiError | BundleError | ValueError | FileNotFoundError):
        return str(error)
    return f"something went wrong ({type(error).__name__}: {error})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m musicgen", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="command")
    _add_train(commands.add_parser("train", help="train an LSTM on MIDI files (resumes a stopped run)"))
    _add_generate(commands.add_parser("generate", help="compose a new piece with a trained model"))
    commands.add_parser("styles", help="list the built-in styles, one name a line").set_defaults(command=styles_command)
    info = commands.add_parser("info", help="describe a trained model")
    info.add_argument("bundle", type=Path)
    info.set_defaults(command=info_command)
    evaluate = commands.add_parser("evaluate", help="measure a model on music it never saw")
    evaluated = evaluate.add_mutually_exclusive_group(required=True)
    evaluated.add_argument("bundle", type=Path, nargs="?")
    evaluated.add_argument("--style", help="a built-in style, measured on its own music")
    evaluate.add_argument("files", nargs="*", type=Path, help="the training MIDI files or folders")
    evaluate.add_argument("--temperatures", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.2])
    evaluate.add_argument("--pieces", type=int, default=8, help="pieces generated per temperature")
    evaluate.set_defaults(command=evaluate_command)
    return parser


def _add_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="MIDI files or folders of them")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--sequence-length", type=int, default=128, help="tokens per training window")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--embedding-size", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, help="Adam step size (default 2e-3; fine-tuning: its own)")
    parser.add_argument("--transpose", type=int, help="augment by shifting up to this many semitones (default 0)")
    parser.add_argument(
        "--start-from",
        type=Path,
        help="fine-tune this model folder (checkpoints/base: all the built-in styles) with the fine-tuning settings",
    )
    parser.add_argument(
        "--minutes", type=float, help="stop after this much training, past the first epoch (fine-tuning: 3)"
    )
    parser.add_argument(
        "--instruments", action="store_true", help="tokens that name each note's instrument, and keep the drums"
    )
    parser.add_argument("--validation-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision", default="auto", help="matrix products: auto (bfloat16 where the CPU has it), float32 or bfloat16"
    )
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="folder that holds the run folders")
    parser.add_argument("--out", type=Path, help="copy the finished model bundle here")
    parser.add_argument(
        "--workers", type=_worker_count, help="train in this many processes with tf.distribute (docs/distributed.md)"
    )
    parser.add_argument(
        "--threads-per-worker",
        type=_positive_whole_number,
        help="TensorFlow threads of each worker (default: cores / workers)",
    )
    parser.add_argument("--cache", type=Path, help="folder of parsed token shards (default: RUNS/token-cache)")
    parser.add_argument(
        "--checkpoint-steps",
        type=_positive_whole_number,
        default=200,
        help="steps between a multi-worker run's checkpoints",
    )
    parser.set_defaults(command=train_command)


def _worker_count(text: str) -> int:
    """The value of --workers, checked (without TensorFlow)."""
    from musicgen.distributed import check_worker_count

    try:
        return check_worker_count(int(text))
    except ValueError as error:
        message = str(error) if "--workers" in str(error) else "--workers must be a whole number"
        raise argparse.ArgumentTypeError(message) from None


def _positive_whole_number(text: str) -> int:
    """A whole number of at least 1, or a plain argparse error."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return int(text)


def _program_number(text: str) -> int:
    """A General MIDI program 0..127, or a plain argparse error."""
    if not text.strip().isdigit() or int(text) > 127:
        raise argparse.ArgumentTypeError(f"must be a General MIDI program 0..127, not {text!r}")
    return int(text)


def _add_generate(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("bundle", type=Path, nargs="?", help="a model folder")
    model.add_argument("--style", help="a built-in style instead (python -m musicgen styles lists them)")
    parser.add_argument("--out", type=Path, default=Path("generated.mid"))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--notes", type=int, default=400, help="stop after this many notes")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--primer", type=Path, help="a MIDI file whose opening the piece continues")
    parser.add_argument("--primer-notes", type=int, default=16)
    parser.add_argument(
        "--fresh-start", action="store_true", help="start from nothing, not from an opening of the music it learned"
    )
    parser.add_argument("--key", help="key lock, e.g. 'D minor'")
    parser.add_argument("--bpm", type=float, default=100.0)
    parser.add_argument(
        "--program", type=_program_number, help="General MIDI instrument 0..127 of every part (default: the model's)"
    )
    parser.add_argument("--variations", type=int, default=1)
    parser.set_defaults(command=generate_command)


def train_command(arguments: argparse.Namespace) -> None:
    """Load the files, report each, train with a progress bar."""
    import shutil

    from musicgen.bundle import load_bundle
    from musicgen.corpus import load_paths
    from musicgen.model import ModelConfig
    from musicgen.tokens import TokenConfig, Vocabulary
    from musicgen.train import TrainConfig, fine_tuning_settings, train

    model_config = ModelConfig(
        embedding_size=arguments.embedding_size,
        layers=arguments.layers,
        units=arguments.units,
        dropout=arguments.dropout,
    )
    train_config = TrainConfig(
        epochs=arguments.epochs,
        sequence_length=arguments.sequence_length,
        batch_size=arguments.batch_size,
        validation_share=arguments.validation_share,
        seed=arguments.seed,
        precision=arguments.precision,
    )
    vocabulary = Vocabulary(TokenConfig(instruments=arguments.instruments))
    if arguments.workers is not None or os.environ.get("TF_CONFIG"):
        if arguments.start_from:
            raise ValueError("--start-from trains in one process: leave out --workers")
        return _train_on_workers(arguments, model_config, _explicit(arguments, train_config), vocabulary)
    start_from = load_bundle(arguments.start_from) if arguments.start_from else None
    vocabulary = start_from.info.vocabulary if start_from else vocabulary
    corpus = load_paths(_midi_paths(arguments.files), vocabulary)
    for report in corpus.reports:
        print(report.summary)
    if not corpus.scores:
        raise ValueError("none of the files could be used for training")
    if start_from:
        train_config = fine_tuning_settings(corpus, vocabulary, train_config)
    train_config = _explicit(arguments, train_config)
    result = train(
        corpus, arguments.runs, model_config, train_config, vocabulary, on_epoch=_print_epoch, start_from=start_from
    )
    if result.resumed_from_epoch:
        print(f"resumed the earlier run after epoch {result.resumed_from_epoch}")
    ended = f", ended by its {result.ended_by}" if result.ended_by else ""
    print(f"model: {result.run_dir} ({result.epochs_done} epochs{ended})")
    if arguments.out:
        shutil.copytree(result.run_dir, arguments.out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("backup"))
        print(f"copied to {arguments.out}")


def _explicit(arguments: argparse.Namespace, train_config):
    """The training settings with those given on the command line (learning rate, transposition, minutes)."""
    from dataclasses import replace

    given = {
        "learning_rate": arguments.learning_rate,
        "transpose_semitones": arguments.transpose,
        "time_budget_seconds": None if arguments.minutes is None else round(arguments.minutes * 60),
    }
    return replace(train_config, **{name: value for name, value in given.items() if value is not None})


def _train_on_workers(arguments: argparse.Namespace, model_config, train_config, vocabulary) -> None:
    """Start local workers (--workers), or be one worker of the cluster in TF_CONFIG."""
    from musicgen import distributed

    launched_here = os.environ.get(distributed.LOCAL_WORKER_VARIABLE) == "1"
    if arguments.workers is not None and os.environ.get("TF_CONFIG") and not launched_here:
        raise ValueError("TF_CONFIG is set, so this process is one worker of that cluster: leave out --workers")
    cluster = distributed.cluster_from_tf_config(os.environ.get("TF_CONFIG"))  # checked before anything is parsed
    show_reports = not launched_here and (cluster is None or cluster.is_chief)
    cached = _cached_corpus(arguments, show_reports, vocabulary)
    if arguments.workers is not None and not launched_here:
        threads = arguments.threads_per_worker or max(1, (os.cpu_count() or 1) // arguments.workers)
        distributed.launch_local_workers(arguments.argv, arguments.workers, threads, arguments.runs / "worker-logs")
        return
    result = distributed.train_workers(
        cached,
        arguments.runs,
        model_config,
        train_config,
        vocabulary,
        on_epoch=_print_epoch if cluster is None or cluster.is_chief else None,
        checkpoint_steps=arguments.checkpoint_steps,
    )
    _print_worker_result(arguments, result, cluster)


def _cached_corpus(arguments: argparse.Namespace, show_reports: bool, vocabulary):
    """The token shards of the files, parsed now where not cached yet; skipped files reported when asked."""
    from musicgen.token_cache import cache_corpus

    cached = cache_corpus(_midi_paths(arguments.files), arguments.cache or arguments.runs / "token-cache", vocabulary)
    skipped = [report for report in cached.reports if report.error is not None]
    if show_reports:
        for report in skipped:
            print(report.summary)
        print(f"{len(cached.shards):,} of {len(cached.reports):,} files used: {cached.token_count:,} tokens")
    if not cached.shards:
        raise ValueError("none of the files could be used for training")
    return cached


def _print_worker_result(arguments: argparse.Namespace, result, cluster) -> None:
    """The chief says where the model is and copies it to --out; every worker prints its weights' digest."""
    import shutil

    index, count = (cluster.index, len(cluster.workers)) if cluster else (0, 1)
    print(f"worker {index} of {count}: step {result.steps_done}, weights {result.weights_digest}")
    if index != 0:
        return
    if result.resumed_from_step:
        print(f"resumed the earlier run at step {result.resumed_from_step}")
    print(f"{result.tokens_per_second:,.0f} tokens/s on {count} workers")
    print(f"model: {result.run_dir} ({result.epochs_done} epochs)")
    if arguments.out:
        shutil.copytree(result.run_dir, arguments.out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("backup"))
        print(f"copied to {arguments.out}")


def _midi_paths(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
        else:
            found.append(path)
    return found


def _print_epoch(report) -> None:
    width = 30
    filled = round(width * report.epoch / report.epochs)
    validation = f" validation {report.validation_loss:.3f}" if report.validation_loss is not None else ""
    bar = "#" * filled + "." * (width - filled)
    print(f"epoch {report.epoch}/{report.epochs} [{bar}] loss {report.loss:.3f}{validation} ({report.seconds:.0f} s)")


def generate_command(arguments: argparse.Namespace) -> None:
    """Sample pieces and write them as MIDI files (with NumPy: no TensorFlow)."""
    from musicgen import midi
    from musicgen.bundle import load_weight_arrays
    from musicgen.sample import SampleConfig, Sampler, primer_from_score
    from musicgen.styles import find_style

    info, weights = load_weight_arrays(arguments.bundle or find_style(arguments.style).model)
    config = SampleConfig(
        temperature=arguments.temperature,
        top_k=arguments.top_k,
        top_p=arguments.top_p,
        max_notes=arguments.notes,
        max_seconds=arguments.seconds,
        seed=arguments.seed,
        variations=arguments.variations,
        key=arguments.key,
        bpm=arguments.bpm,
    )
    primer = [] if arguments.fresh_start else None  # None: an opening of the music the model learned, if it has any
    if arguments.primer:
        primer = primer_from_score(midi.read(arguments.primer), info.vocabulary, arguments.primer_notes)
    pieces = Sampler(weights, info.vocabulary, info.openings).scores(config, primer, arguments.program)
    for number, piece in enumerate(pieces, 1):
        out = arguments.out if len(pieces) == 1 else arguments.out.with_stem(f"{arguments.out.stem}-{number}")
        out.write_bytes(midi.write(piece))
        print(f"{out}: {len(piece.notes)} notes, {piece.duration_seconds:.1f} s")


def styles_command(arguments: argparse.Namespace) -> None:
    """Print the name of every built-in style, one a line."""
    from musicgen.styles import built_in_styles

    for style in built_in_styles():
        print(style.name)


def info_command(arguments: argparse.Namespace) -> None:
    """Describe a bundle without loading TensorFlow."""
    from musicgen.bundle import read_history, read_info

    info, version = read_info(arguments.bundle)
    history = read_history(arguments.bundle)
    config = info.model_config
    print(f"model: {arguments.bundle}")
    print(f"network: {config.layers} LSTM layers x {config.units} units, {config.vocabulary_size} tokens")
    print(f"trained on {len(info.file_names)} files (corpus {info.fingerprint[:12]}), musicgen {version}")
    if history:
        last = history[-1]
        validation = last.get("validation_loss")
        print(
            f"epochs: {len(history)}, last loss {last['loss']:.3f}"
            + (f", validation {validation:.3f}" if validation else "")
        )


def evaluate_command(arguments: argparse.Namespace) -> None:
    """Held-out likelihood against the n-gram baseline, originality and style per temperature."""
    from musicgen.evaluate import evaluate_bundle, format_report
    from musicgen.styles import find_style

    bundle, files = arguments.bundle, arguments.files
    if arguments.style:
        style = find_style(arguments.style)
        bundle, files = style.model, files or [style.music]
    if not files:
        raise ValueError("say which MIDI files or folders the model learned from")
    print(format_report(evaluate_bundle(bundle, _midi_paths(files), arguments.temperatures, arguments.pieces)))
