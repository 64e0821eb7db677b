"""musicgen.workspace: each visitor's folder, the limits, and a clean-up that removes only what the app made."""

import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import mido
import pytest

from musicgen import workspace
from musicgen.corpus import load_corpus, load_folder
from musicgen.workspace import ROOT_MARKER, WEIGHTS_FILE, WORKSPACE_MARKER, Limits, Workspace, runs_root
from tests.test_sessions import music_files

APP_FOLDER = Path(__file__).resolve().parent.parent


def age(folder: Path, minutes: float) -> None:
    """Make a workspace look last used `minutes` ago."""
    then = time.time() - minutes * 60
    os.utime(folder / WORKSPACE_MARKER, (then, then))


def fill(folder: Path, megabytes: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").write_bytes(bytes(int(megabytes * 1_000_000)))


def fake_model(space: Workspace, name: str, megabytes: float) -> Path:
    """A folder that the workspace counts as a model: it holds weights."""
    folder = space.runs / name
    folder.mkdir(parents=True)
    (folder / WEIGHTS_FILE).write_bytes(bytes(int(megabytes * 1_000_000)))
    return folder


def padded_midi(pitch: int, megabytes: float) -> bytes:
    """A short MIDI file made big by a text event."""
    track = mido.MidiTrack([mido.MetaMessage("text", text="x" * int(megabytes * 1_000_000))])
    track += [mido.Message("note_on", note=pitch, velocity=80), mido.Message("note_off", note=pitch, time=480)]
    buffer = io.BytesIO()
    mido.MidiFile(tracks=[track]).save(file=buffer)
    return buffer.getvalue()


# Limits.


def test_limits_come_from_the_environment_and_bad_values_are_named():
    limits = Limits.from_environment({"MUSICGEN_MAX_TRAININGS": "2", "MUSICGEN_SESSION_MB": " 50 "})
    assert (limits.max_trainings, limits.session_megabytes, limits.max_age_hours) == (2, 50, 24.0)
    assert Limits.from_environment({"MUSICGEN_MAX_AGE_HOURS": ""}) == Limits()
    with pytest.raises(ValueError, match="max_trainings must be in range 1..16, got 0"):
        Limits(max_trainings=0)


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("MUSICGEN_MAX_TRAININGS", "lots", "a whole number from 1 to 16, got 'lots'"),
        ("MUSICGEN_MAX_TRAININGS", "0", "a whole number from 1 to 16, got '0'"),
        ("MUSICGEN_SESSION_MB", "1.5", "a whole number from 10 to 100,000, got '1.5'"),
        ("MUSICGEN_TOTAL_MB", "5", "a whole number from 10 to 1,000,000, got '5'"),
        ("MUSICGEN_MAX_AGE_HOURS", "nan", "a number from 0.01 to 10,000, got 'nan'"),
        ("MUSICGEN_ABANDON_SECONDS", "-1", "a number from 10 to 86,400, got '-1'"),
    ],
)
def test_every_limit_out_of_range_names_its_variable(variable, value, message):
    with pytest.raises(ValueError, match=f"^{variable} must be {message}$"):
        Limits.from_environment({variable: value})


# The runs root.


def test_without_the_variable_the_root_is_a_marked_folder_in_the_temp_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    root = runs_root({})
    assert root == tmp_path / "musicgen-sessions" and (root / ROOT_MARKER).is_file()
    Workspace.create(root)
    assert runs_root({}) == root  # holding workspaces, it is still the app's own
    (root / ROOT_MARKER).unlink()
    with pytest.raises(ValueError, match=f"^MUSICGEN_RUNS is not set and its default {root} cannot be used, as it"):
        runs_root({})


def test_a_home_folder_path_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    root = runs_root({"MUSICGEN_RUNS": "~/runs"})
    assert root == tmp_path / "runs" and (root / ROOT_MARKER).is_file()


def test_an_empty_folder_is_taken_and_marked(tmp_path):
    assert runs_root({"MUSICGEN_RUNS": str(tmp_path)}) == tmp_path
    assert (tmp_path / ROOT_MARKER).is_file()


def test_a_relative_path_is_refused():
    with pytest.raises(ValueError, match=r"^MUSICGEN_RUNS must be an absolute path such as .*, got 'runs'$"):
        runs_root({"MUSICGEN_RUNS": "runs"})


def folder_with_files(tmp_path: Path) -> str:
    (tmp_path / "thesis.pdf").write_bytes(b"years of work")
    return str(tmp_path)


@pytest.mark.parametrize(
    "value, problem",
    [
        ("/dev/null", "it is not a folder: give a new folder's path"),
        ("/dev/null/runs", "it cannot be made or used (not a directory): give a new folder's path"),
        ("/", "it already holds other files: give a folder inside it for musicgen alone, such as /musicgen-runs"),
        (str(APP_FOLDER), "it already holds other files: give a folder inside it"),
        (folder_with_files, "it already holds other files: give a folder inside it"),
    ],
    ids=["device", "under a file", "system root", "app folder", "folder with files"],
)
def test_a_folder_that_is_not_the_apps_own_is_refused_and_left_as_it_was(value, problem, tmp_path):
    value = value(tmp_path) if callable(value) else value
    before = sorted(os.listdir(value)) if os.path.isdir(value) else None
    with pytest.raises(ValueError) as refused:
        runs_root({"MUSICGEN_RUNS": value})
    message = str(refused.value)
    assert message.startswith(f"MUSICGEN_RUNS names {value}, but {problem}") and message.endswith("or leave it unset")
    assert "\n" not in message
    assert (sorted(os.listdir(value)) if os.path.isdir(value) else None) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_a_folder_the_app_may_not_write_to_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ValueError, match="^MUSICGEN_RUNS names .*, but this app may not write to it"):
        runs_root({"MUSICGEN_RUNS": str(locked)})


# Workspaces.


def test_a_workspace_and_a_root_the_app_makes_are_marked(tmp_path):
    space = Workspace.create(tmp_path / "runs")
    assert (tmp_path / "runs" / ROOT_MARKER).is_file() and (space.folder / WORKSPACE_MARKER).is_file()
    Workspace.create(tmp_path)  # a folder that was there already is not marked as the app's
    assert not (tmp_path / ROOT_MARKER).exists()
    shutil.rmtree(tmp_path / "runs")
    space.touch()  # removed while idle: made again, marked
    assert (tmp_path / "runs" / ROOT_MARKER).is_file() and (space.folder / WORKSPACE_MARKER).is_file()


def test_a_full_workspace_makes_room_by_removing_its_oldest_models(space):
    for name in ("first", "second", "third"):
        fake_model(space, name, 4)
        time.sleep(0.01)
    removed = space.make_room(4_000_000, Limits(session_megabytes=10), keep=[space.runs / "first"])
    assert len(removed) == 2 and [folder.name for folder in space.model_folders()] == ["first"]
    with pytest.raises(ValueError, match="more than the 10 MB"):
        space.make_room(20_000_000, Limits(session_megabytes=10))


def test_a_model_zip_opens_into_the_workspace_and_a_bad_one_leaves_nothing_behind(space, tiny_model):
    from musicgen.bundle import BundleError, bundle_to_zip

    folder = space.open_model_zip("musicgen-model-tiny.zip", bundle_to_zip(tiny_model), Limits())
    assert folder == space.models / "tiny" and space.model_folders() == [folder]
    with pytest.raises(BundleError, match="not a musicgen model file"):
        space.open_model_zip("holiday.zip", b"not a zip", Limits())
    assert [path.name for path in space.models.iterdir()] == ["tiny"]


def test_a_refused_model_file_costs_the_visitor_no_model(space):
    from musicgen.bundle import BundleError

    kept = fake_model(space, "mine", 9)
    with pytest.raises(BundleError, match="not a musicgen model file"):
        space.open_model_zip("big.zip", b"x" * 1_000_000, Limits(session_megabytes=10))
    assert space.model_folders() == [kept] and not space.models.exists()


def test_the_audio_of_the_pieces_on_show_is_kept_on_disk_until_the_next_ones(space):
    path = space.keep_audio("musicgen-bach-seed12", b"ID3...", "mp3")
    assert path == space.pieces / "musicgen-bach-seed12.mp3" and path.read_bytes() == b"ID3..."
    space.forget_pieces()
    assert not space.pieces.exists()


# Keeping the training music.


def test_files_whose_names_look_alike_are_all_kept_and_give_the_same_fingerprint(space):
    music = [data for _, data in music_files(4)]
    names = ["My Song.mid", "my-song.mid", "broken.mid", "my_song.MID", "../../etc/passwd.mid"]
    files = list(zip(names, [music[0], music[1], b"junk", music[2], music[3]], strict=True))
    corpus = load_corpus(files)
    assert space.save_corpus(files, corpus, Limits()) == []
    folder = space.corpus_folder(corpus.fingerprint)
    saved = ["001-my-song.mid", "002-my-song.mid", "003-my-song.mid", "004-passwd.mid"]
    assert sorted(path.name for path in folder.iterdir()) == saved
    assert load_folder(folder).fingerprint == corpus.fingerprint


def test_the_training_music_counts_against_the_workspace_cap(space):
    old = fake_model(space, "old", 5)
    time.sleep(0.01)
    new = fake_model(space, "new", 3)
    files = [(f"big{number}.mid", padded_midi(60 + number, 1.5)) for number in range(2)]
    corpus = load_corpus(files)
    with pytest.raises(ValueError, match="your workspace is full"):
        space.save_corpus(files, corpus, Limits(session_megabytes=10), keep=[old, new])
    assert space.corpus_folder(corpus.fingerprint) is None
    assert space.save_corpus(files, corpus, Limits(session_megabytes=10)) == ["old (damaged)"]
    assert space.model_folders() == [new] and space.size_bytes() <= 10_000_000
    assert space.save_corpus(files, corpus, Limits(session_megabytes=10)) == []  # kept once


def test_training_music_bigger_than_the_cap_is_refused(space):
    files = [(f"big{number}.mid", padded_midi(60 + number, 1.9)) for number in range(6)]
    with pytest.raises(ValueError, match="more than the 10 MB a visitor may use"):
        space.save_corpus(files, load_corpus(files), Limits(session_megabytes=10))


# Clean-up.


def test_old_workspaces_are_removed_and_recent_or_kept_ones_stay(tmp_path):
    old, recent, busy = (Workspace.create(tmp_path) for _ in range(3))
    age(old.folder, 30 * 60)
    age(busy.folder, 30 * 60)
    removed = workspace.remove_old_workspaces(tmp_path, Limits(), keep={busy.session_id})
    assert removed == [old.session_id]
    assert not old.folder.exists() and recent.folder.exists() and busy.folder.exists()


def test_over_the_total_cap_the_least_recently_used_workspaces_go_first(tmp_path):
    spaces = [Workspace.create(tmp_path) for _ in range(3)]
    for hours, space in zip((3, 2, 1), spaces, strict=True):
        fill(space.folder, 4)
        age(space.folder, hours * 60)
    removed = workspace.remove_old_workspaces(tmp_path, Limits(total_megabytes=10))
    assert removed == [spaces[0].session_id]
    assert [space.folder.exists() for space in spaces] == [False, True, True]


def test_clean_up_removes_only_folders_the_app_marked(tmp_path):
    root = tmp_path / "runs"
    old = Workspace.create(root)
    age(old.folder, 30 * 60)
    outside = Workspace.create(tmp_path / "elsewhere")
    age(outside.folder, 30 * 60)
    fill(root / "photos", 20)
    (root / "notes.txt").write_text("mine")
    (root / "link").symlink_to(outside.folder)
    then = time.time() - 30 * 3600
    os.utime(root / "photos", (then, then))
    assert workspace.remove_old_workspaces(root, Limits(total_megabytes=10)) == [old.session_id]
    assert (root / "photos" / "data").exists() and (root / "notes.txt").exists() and outside.folder.exists()


def test_a_workspace_used_in_the_last_minutes_is_never_removed(tmp_path):
    recent = [Workspace.create(tmp_path) for _ in range(3)]
    for minutes, space in enumerate(recent, 1):
        fill(space.folder, 4)
        age(space.folder, minutes)
    idle = Workspace.create(tmp_path)
    age(idle.folder, workspace.RECENT_USE_SECONDS / 60 + 1)
    limits = Limits(max_age_hours=0.01, total_megabytes=10)  # 36 s, and less than the three take
    assert workspace.remove_old_workspaces(tmp_path, limits) == [idle.session_id]
    assert all(space.folder.exists() for space in recent)


# Names.


def test_file_and_model_names_are_plain(tmp_path):
    assert workspace.slug("My Model (2)") == "my-model-2"
    assert workspace.numbered_file_name(1, "../../etc/pass wd.MID") == "001-pass-wd.mid"
    assert workspace.numbered_file_name(12, "???.mid") == "012-piece.mid"
    assert workspace.model_name(Path("/x/runs/849153db43a9-8cf43e31a2")) == "my-model-849153"
    assert workspace.model_name(Path("/x/models/My Chorales")) == "my-chorales"
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny-2").mkdir()
    assert workspace.free_name(tmp_path / "tiny") == tmp_path / "tiny-3"
    assert workspace.free_name(tmp_path / "other") == tmp_path / "other"
