"""musicgen.sessions and musicgen.jobs for real: TensorFlow trains tiny models in worker threads."""

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from musicgen import jobs, memory, midi, sessions
from musicgen.bundle import describe_bundle
from musicgen.corpus import load_corpus, load_folder
from musicgen.model import ModelConfig
from musicgen.tokens import decode
from musicgen.train import TrainConfig
from musicgen.workspace import WEIGHTS_FILE, Workspace
from tests.conftest import TINY_MODEL, scale_piece

WAIT_SECONDS = 300  # generous: the machine's two cores may be busy with other training


def music_files(count: int = 6, notes: int = 48) -> list[tuple[str, bytes]]:
    """Short MIDI files built in memory, different for each number."""
    return [(f"piece{number}.mid", midi.write(scale_piece(number, notes))) for number in range(count)]


def request(epochs: int = 2, files=None, **train_settings) -> jobs.TrainingRequest:
    settings = dict(epochs=epochs, sequence_length=16, batch_size=8) | train_settings
    corpus = load_corpus(files or music_files())
    return jobs.TrainingRequest(corpus, ModelConfig(**TINY_MODEL), TrainConfig(**settings))


def wait_until(condition, seconds: float = WAIT_SECONDS, what: str = "the condition"):
    """Poll `condition` until it returns something truthy; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def finished(job: jobs.TrainingJob) -> jobs.Progress:
    return wait_until(lambda: (lambda p: p if not p.active else None)(job.snapshot()), what="the job to end")


def train_tiny_model(folder: Path, music_folder: Path, epochs: int = 2) -> Path:
    """A tiny trained model bundle in `folder`, learned from MIDI files written into `music_folder`."""
    music_folder.mkdir(parents=True, exist_ok=True)
    for name, data in music_files():
        (music_folder / name).write_bytes(data)
    files = [(path.name, path.read_bytes()) for path in sorted(music_folder.glob("*.mid"))]
    space = Workspace.create(folder.parent / "training-space")
    job = jobs.TrainingJob(request(epochs, files), space)
    jobs.TrainingQueue().submit(job)
    progress = finished(job)
    assert progress.state == "finished", progress.message
    shutil.copytree(progress.run_dir, folder, ignore=shutil.ignore_patterns("backup"))
    return folder


@pytest.fixture
def queue() -> jobs.TrainingQueue:
    return jobs.TrainingQueue(max_running=1)


# Training jobs.


def test_a_job_trains_in_its_workspace_and_its_progress_fills_epoch_by_epoch(queue, space):
    job = queue.submit(jobs.TrainingJob(request(epochs=2), space))
    progress = finished(job)
    assert progress.state == "finished" and progress.message is None
    assert [entry["epoch"] for entry in progress.history] == [1, 2]
    assert all(entry["loss"] > 0 and entry["validation_loss"] is not None for entry in progress.history)
    assert progress.run_dir.parent == space.runs and (progress.run_dir / WEIGHTS_FILE).exists()
    assert progress.resumed_after_epoch == 0 and progress.seconds_left == 0
    assert space.model_folders() == [progress.run_dir]
    assert [line.split(":")[0] for line in progress.likeness] == [  # measured on pieces the new model composed
        "Notes sounding at once",
        "Notes per beat",
        "Pitch range",
        "Pitch classes",
    ]


def test_the_progress_counts_the_steps_within_an_epoch_before_the_first_one_ends(queue, space):
    job = queue.submit(jobs.TrainingJob(request(epochs=3, files=music_files(12, 160), batch_size=2), space))
    progress = wait_until(
        lambda: (lambda p: p if p.step >= 3 and p.epoch == 0 else None)(job.snapshot()), what="steps in epoch 1"
    )
    assert progress.steps_per_epoch > progress.step_in_epoch == progress.step >= 3
    assert 0 < progress.share_done < 1 / 3
    assert progress.seconds_per_step > 0 and progress.seconds_per_epoch is not None
    assert progress.seconds_left == pytest.approx(
        (3 * progress.steps_per_epoch - progress.step) * progress.seconds_per_step
    )
    job.request_stop()
    assert finished(job).state == "stopped"


def test_stop_ends_training_cleanly_and_train_again_resumes_after_the_last_epoch(queue, space):
    job = queue.submit(jobs.TrainingJob(request(epochs=500), space))
    wait_until(lambda: job.snapshot().epoch >= 1, what="the first epoch")
    job.request_stop()
    assert job.snapshot().stopping
    stopped = finished(job)
    assert stopped.state == "stopped" and 1 <= stopped.epoch < 500
    assert "Press Train" in stopped.message
    again = queue.submit(jobs.TrainingJob(request(epochs=stopped.epoch + 1), space))
    wait_until(lambda: again.snapshot().state != "queued", what="the second job to start")
    resumed = finished(again)
    assert resumed.state == "finished", resumed.message
    assert resumed.resumed_after_epoch == stopped.epoch
    assert resumed.epoch == stopped.epoch + 1 and resumed.run_dir == stopped.run_dir


def test_asking_for_no_more_epochs_than_done_says_so(queue, space):
    finished(queue.submit(jobs.TrainingJob(request(epochs=1), space)))
    progress = finished(queue.submit(jobs.TrainingJob(request(epochs=1), space)))
    assert progress.state == "finished" and "already had 1 epochs" in progress.message


def test_the_limit_queues_later_jobs_in_order_and_tells_each_its_place(tmp_path):
    queue = jobs.TrainingQueue(max_running=1)
    spaces = [Workspace.create(tmp_path) for _ in range(3)]
    first = queue.submit(jobs.TrainingJob(request(epochs=500), spaces[0]))
    second = queue.submit(jobs.TrainingJob(request(epochs=1), spaces[1]))
    third = queue.submit(jobs.TrainingJob(request(epochs=1), spaces[2]))
    wait_until(lambda: first.snapshot().state == "running", what="the first job to run")
    assert (second.snapshot().state, second.snapshot().place_in_queue) == ("queued", 1)
    assert (third.snapshot().state, third.snapshot().place_in_queue) == ("queued", 2)
    assert queue.active_owners() == {space.session_id for space in spaces}
    first.request_stop()
    assert finished(second).state == "finished"
    assert finished(third).state == "finished"
    assert finished(first).state == "stopped" and queue.active_owners() == set()


def test_a_job_stopped_while_queued_leaves_the_queue_without_training(tmp_path):
    queue = jobs.TrainingQueue(max_running=1)
    first = queue.submit(jobs.TrainingJob(request(epochs=500), Workspace.create(tmp_path)))
    waiting_space = Workspace.create(tmp_path)
    waiting = queue.submit(jobs.TrainingJob(request(epochs=1), waiting_space))
    waiting.request_stop()
    progress = finished(waiting)
    assert progress.state == "stopped" and "left the queue" in progress.message and progress.history == ()
    assert waiting_space.model_folders() == []
    first.request_stop()
    finished(first)


def test_a_training_nobody_watches_stops_by_itself(queue, space):
    job = jobs.TrainingJob(request(epochs=500), space, abandon_seconds=1.0)
    queue.submit(job)
    wait_until(lambda: not queue.active_owners(), what="the unwatched job to stop")
    assert job.snapshot().state == "stopped"


def test_a_training_pauses_between_batches_while_a_piece_is_being_made(queue, space):
    job = queue.submit(jobs.TrainingJob(request(epochs=1000), space))
    wait_until(lambda: job.snapshot().epoch >= 3, what="three epochs")
    with sessions.FOREGROUND.making_music():
        before = job.snapshot().epoch
        time.sleep(1.5)
        during = job.snapshot().epoch - before
    wait_until(lambda: job.snapshot().epoch >= before + during + 3, what="training to go on")
    job.request_stop()
    finished(job)
    assert during <= 1  # at most the batch under way when the piece began


def test_two_sessions_train_at_once_and_never_see_each_others_work(tmp_path):
    queue = jobs.TrainingQueue(max_running=2)
    alice, bob = Workspace.create(tmp_path), Workspace.create(tmp_path)
    alice_job = queue.submit(jobs.TrainingJob(request(epochs=1, files=music_files(4)), alice))
    bob_job = queue.submit(jobs.TrainingJob(request(epochs=2, files=music_files(5)), bob))
    alice_progress, bob_progress = finished(alice_job), finished(bob_job)
    assert (alice_progress.epoch, bob_progress.epoch) == (1, 2)
    assert alice_progress.run_dir.is_relative_to(alice.folder) and bob_progress.run_dir.is_relative_to(bob.folder)
    assert alice.model_folders() == [alice_progress.run_dir] and bob.model_folders() == [bob_progress.run_dir]


def test_a_failed_training_reports_a_plain_message(queue, space):
    bad = jobs.TrainingRequest(
        load_corpus(music_files(2)), ModelConfig(**TINY_MODEL), TrainConfig(epochs=1, sequence_length=2048)
    )
    progress = finished(queue.submit(jobs.TrainingJob(bad, space)))
    assert progress.state == "failed" and progress.message.startswith("The training music is too short")


def test_training_further_from_a_model_writes_a_new_run_and_leaves_the_model_as_it_was(queue, space, tiny_model):
    weights = (tiny_model / WEIGHTS_FILE).read_bytes()
    further = jobs.TrainingRequest(
        load_corpus(music_files(3)), None, TrainConfig(epochs=1, sequence_length=16), tiny_model
    )
    progress = finished(queue.submit(jobs.TrainingJob(further, space)))
    assert progress.state == "finished", progress.message
    assert progress.run_dir.parent == space.runs
    assert (tiny_model / WEIGHTS_FILE).read_bytes() == weights


# Checking a request before it is queued.


def test_music_too_short_for_the_sequence_length_is_refused_at_once():
    short = jobs.TrainingRequest(
        load_corpus(music_files(1, notes=8)), ModelConfig(**TINY_MODEL), TrainConfig(sequence_length=512)
    )
    with pytest.raises(ValueError, match="too short for a sequence length of 512"):
        jobs.plan_request(short, memory.MemoryBudget().training_bytes)


def test_uploads_with_no_usable_file_are_refused_at_once():
    nothing = jobs.TrainingRequest(load_corpus([("a.mid", b"junk")]), ModelConfig(**TINY_MODEL), TrainConfig())
    with pytest.raises(ValueError, match="none of your files can be used"):
        jobs.plan_request(nothing, memory.MemoryBudget().training_bytes)


# Progress in words.


def history(*losses) -> tuple[dict, ...]:
    return tuple(
        {"epoch": number, "epochs": 9, "loss": loss, "validation_loss": validation, "seconds": 10.0 + number}
        for number, (loss, validation) in enumerate(losses, 1)
    )


def test_memorising_is_flagged_when_validation_loss_rises_while_training_loss_falls():
    rising = history((3.0, 3.1), (2.5, 2.6), (2.0, 2.7), (1.5, 2.9))
    assert jobs.Progress("running", 9, rising).memorising_since == 2
    falling = history((3.0, 3.1), (2.5, 2.6), (2.0, 2.5), (1.5, 2.4))
    assert jobs.Progress("running", 9, falling).memorising_since is None


def test_time_left_comes_from_the_recent_epochs_of_this_job_leaving_out_its_slow_first():
    progress = jobs.Progress("running", 9, history(*[(2.0, 2.0)] * 5), resumed_after_epoch=1)
    assert progress.seconds_per_epoch == pytest.approx((13 + 14 + 15) / 3)
    assert progress.seconds_left == pytest.approx(4 * 14)
    assert jobs.Progress("running", 9).seconds_left is None


def test_time_left_counts_the_steps_left_and_never_outlasts_the_time_budget():
    steps = jobs.Progress("running", 4, step=250, steps_per_epoch=100, seconds_per_step=0.5)
    assert (steps.epoch, steps.step_in_epoch, steps.share_done) == (0, 50, 250 / 400)
    assert steps.seconds_left == pytest.approx(150 * 0.5)
    budget = replace(steps, budget_ends_at=time.monotonic() + 30)
    assert 29 < budget.seconds_left <= 30
    spent = replace(steps, budget_ends_at=time.monotonic() - 1)
    assert spent.seconds_left == 0
    first_epoch = replace(spent, step=40)  # a time budget always lets the first epoch end
    assert first_epoch.seconds_left == pytest.approx(60 * 0.5)


# Composing.


def test_the_same_seed_gives_the_same_pieces_and_a_primer_opens_each_of_them(tiny_model):
    from musicgen.sample import SampleConfig

    composer = sessions.load_composer(tiny_model)
    config = SampleConfig(max_seconds=8, seed=7, variations=2, bpm=120)
    first = sessions.compose(composer, config, "tiny")
    again = sessions.compose(composer, config, "tiny")
    assert [piece.midi_bytes for piece in first] == [piece.midi_bytes for piece in again]
    assert [piece.file_stem for piece in first] == ["musicgen-tiny-seed7-1", "musicgen-tiny-seed7-2"]
    primed = sessions.compose(composer, config, "tiny", program=6, primer_score=scale_piece(3), primer_notes=8)
    assert all(len(piece.primer) == 8 and set(piece.primer) <= set(piece.score.notes) for piece in primed)
    assert {note.program for piece in primed for note in piece.score.melodic_notes} == {6}  # drums stay drums
    # One instrument: the MIDI file holds the notes exactly (past 15 instruments sounding at once, MIDI's 16
    # channels are shared, and a barely trained model with instrument tokens picks instruments at random).
    assert midi.read(primed[0].midi_bytes).notes == primed[0].score.notes


def test_a_model_trained_on_uploads_starts_its_pieces_from_their_openings_unless_asked_for_a_fresh_start(tiny_model):
    from musicgen.sample import OPENING_NOTES, SampleConfig

    composer = sessions.load_composer(tiny_model)
    uploads = [midi.read(data) for _, data in music_files()]
    kept = [decode(opening, composer.info.vocabulary).notes for opening in composer.info.openings]
    places = [{(note.start, note.pitch, note.end) for note in notes} for notes in kept]
    assert places == [{(n.start, n.pitch, n.end) for n in upload.notes[:OPENING_NOTES]} for upload in uploads]
    config = SampleConfig(max_seconds=8, seed=4, variations=2, bpm=120)
    pieces = sessions.compose(composer, config, "tiny")
    for variation, piece in enumerate(pieces):  # drawn orange in the piano roll
        opening = {(note.start, note.pitch) for note in kept[(4 + variation) % len(kept)]}
        assert {(note.start, note.pitch) for note in piece.primer} == opening
    assert all(piece.primer == () for piece in sessions.compose(composer, config, "tiny", fresh_start=True))


def test_piece_file_names_are_plain():
    assert sessions.piece_file_stem("bach", 1234) == "musicgen-bach-seed1234"
    assert sessions.piece_file_stem("My Bach!", 7, 2, 3) == "musicgen-my-bach-seed7-2"


def test_errors_the_user_can_act_on_become_sentences_and_bugs_do_not():
    assert sessions.plain_message(midi.MidiError("this file is empty")) == "This file is empty."
    assert sessions.plain_message(ValueError("top_p must be in range 0.01..1, got 2")).startswith("Top_p must")
    assert sessions.plain_message(KeyError("x")) is None


def test_the_key_of_some_music_is_named():
    assert sessions.key_of_music([scale_piece(1), scale_piece(2)]) == "C major"
    assert sessions.key_of_music([]) is None


def test_the_originality_index_is_built_in_a_child_process(tmp_path):
    for name, data in music_files(3):
        (tmp_path / name).write_bytes(data)
    built = sessions.MusicIndexes().get(tmp_path, steps_per_beat=4, timeout=WAIT_SECONDS)
    assert built.fingerprint == load_folder(tmp_path).fingerprint
    assert built.index.piece_count == 3


# Loaded models within their share of memory, and renders a few at a time.


def copies_of(model: Path, root: Path, count: int) -> list[Path]:
    copies = []
    for number in range(count):
        copy = root / f"copy{number}"
        shutil.copytree(model, copy)
        copies.append(copy)
    return copies


def test_loaded_models_stay_within_their_share_the_least_recently_used_dropped_first(tiny_model, tmp_path):
    cost = memory.composer_bytes(describe_bundle(tiny_model).model_config)
    composers = sessions.Composers(budget_bytes=2 * cost, built_in=[tmp_path / "built-in"])
    first, second, third = copies_of(tiny_model, tmp_path, 3)
    loaded_first = composers.get(first, 1.0)
    composers.get(second, 1.0)
    assert composers.get(first, 1.0) is loaded_first  # held: the same object, and now the most recent
    composers.get(third, 1.0)  # the second, least recently used, makes room
    assert composers.held_bytes() == 2 * cost
    assert composers.get(first, 1.0) is loaded_first
    assert composers.get(second, 1.0) is not None  # loads again, dropping the third


def test_a_model_too_big_for_the_share_is_refused_in_one_sentence_and_the_built_in_one_is_not_counted(tiny_model):
    composers = sessions.Composers(budget_bytes=1, built_in=[tiny_model])
    assert composers.get(tiny_model, 1.0) is not None and composers.held_bytes() == 0
    other = sessions.Composers(budget_bytes=1, built_in=[tiny_model.parent / "elsewhere"])
    with pytest.raises(ValueError, match=r"^this model needs about \d+ MB to compose, more than the 0 MB"):
        other.get(tiny_model, 1.0)


def test_renders_wait_for_a_free_slot_everyones_first_piece_first(monkeypatch):
    from musicgen import audio

    running, most, order = [0], [0], []
    lock = threading.Lock()

    def slow_render(midi_bytes):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            order.append(midi_bytes)
        time.sleep(0.2)
        with lock:
            running[0] -= 1
        return b"mp3 of " + midi_bytes

    monkeypatch.setattr(audio, "render", slow_render)  # FluidSynth itself is tested in test_audio.py
    renderer = sessions.Renderer(at_once=2)
    first_visitor = [renderer.submit(f"a{number}".encode(), number) for number in range(1, 5)]
    second_visitor = renderer.submit(b"b1", 1)
    assert [render.result() for render in first_visitor] == [f"mp3 of a{n}".encode() for n in range(1, 5)]
    assert second_visitor.result() == b"mp3 of b1"
    assert most[0] == 2
    assert order.index(b"b1") < order.index(b"a3")  # the second visitor's only piece did not wait for a3 and a4


def test_requests_that_arrive_together_are_sampled_in_one_batch_each_with_its_own_pieces(tiny_model):
    from musicgen.sample import SampleConfig

    composer = sessions.load_composer(tiny_model)
    long_piece = SampleConfig(max_seconds=600, max_notes=3000, seed=3, variations=2)
    short_piece = SampleConfig(max_seconds=10, seed=4, temperature=0.5)
    alone = [composer.queue.sampler.generate(config) for config in (long_piece, short_piece)]
    with ThreadPoolExecutor(2) as visitors:
        long_answer = visitors.submit(composer.queue.generate, long_piece)
        time.sleep(0.05)  # the long request is under way when the short one comes
        short_answer = visitors.submit(composer.queue.generate, short_piece)
        assert short_answer.result() == alone[1]
        assert not long_answer.done()  # the short piece did not wait for the long ones
        assert long_answer.result() == alone[0]
    assert composer.queue.largest_batch == 3
