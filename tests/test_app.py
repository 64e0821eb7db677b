"""The Streamlit page driven by AppTest: it runs the real script, TensorFlow and FluidSynth included.

The app opens on a tiny model trained here (MUSICGEN_MODEL), so that these tests do not
depend on the shipped model; tests/test_browser.py uses the shipped one.
"""

import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from musicgen import midi
from tests.conftest import scale_piece
from tests.test_sessions import music_files, train_tiny_model

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")
WAIT_SECONDS = 300  # generous: the machine's two cores may be busy with other training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """(model folder, the music it learned from)."""
    root = tmp_path_factory.mktemp("app-model")
    return train_tiny_model(root / "tiny", root / "music"), root / "music"


@pytest.fixture(autouse=True)
def environment(tiny, tmp_path, monkeypatch):
    model, music = tiny
    monkeypatch.setenv("MUSICGEN_MODEL", str(model))
    monkeypatch.setenv("MUSICGEN_MODEL_MUSIC", str(music))
    monkeypatch.setenv("MUSICGEN_RUNS", str(tmp_path / "sessions"))


def open_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, label: str):
    return next(widget for widget in at.button if widget.label == label)


def widget(at: AppTest, kind: str, label: str):
    return next(element for element in getattr(at, kind) if element.label == label)


def compose(at: AppTest) -> AppTest:
    button(at, "Compose").click().run()
    assert not at.exception, at.exception
    return at


def piano_rolls(at: AppTest) -> list:
    return [element for element in at.markdown if element.value.startswith('<div class="piano-roll">')]


def texts(at: AppTest, *kinds: str) -> list[str]:
    return [element.value for kind in kinds for element in getattr(at, kind)]


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader(key="midi_files").set_value([(name, data, "audio/midi") for name, data in files]).run()
    assert not at.exception, at.exception
    return at


def set_training(at: AppTest, epochs=1, sequence_length=16, units=32, layers=1) -> None:
    widget(at, "slider", "Epochs").set_value(epochs)
    widget(at, "select_slider", "Sequence length").set_value(sequence_length)
    widget(at, "select_slider", "Units per layer").set_value(units)
    widget(at, "select_slider", "Layers").set_value(layers)


def run_until(at: AppTest, condition, what: str) -> AppTest:
    """Run the page again and again (as the progress fragment does) until `condition(at)` holds."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition(at):
        assert not at.exception, at.exception
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
        at.run()
    return at


def training_ended(at: AppTest) -> bool:
    return bool(at.success) or any("Training failed" in text for text in texts(at, "error"))


def train_until_done(at: AppTest) -> AppTest:
    button(at, "Train").click().run()
    return run_until(at, training_ended, "the training to end")


def test_the_page_opens_on_the_shipped_model_with_plain_help_on_every_control():
    at = open_app()
    assert not at.error and at.title[0].value == "musicgen"
    assert at.selectbox(key="model_choice").value.endswith("tiny")
    kinds = ("button", "slider", "select_slider", "selectbox", "number_input", "toggle", "radio", "file_uploader")
    controls = [element for kind in kinds for element in getattr(at, kind)]
    assert len(controls) > 15
    assert [control.label for control in controls if not control.help] == []


def test_one_click_on_compose_gives_a_piece_to_see_hear_and_download():
    at = compose(open_app())
    assert not at.error
    assert len(at.get("audio")) == 1 and len(piano_rolls(at)) == 1
    labels = [button.label for button in at.get("download_button")]
    assert {"Download MIDI", "Download audio", "Download this model (.zip)"} <= set(labels)
    piece = at.session_state["results"].pieces[0]
    assert piece.file_stem == f"musicgen-tiny-seed{at.session_state['seed']}"
    assert midi.read(piece.midi_bytes).notes
    assert any(text.startswith("Originality: ") for text in texts(at, "caption", "warning"))


def test_the_same_seed_gives_the_same_piece_and_new_seed_gives_another():
    at = open_app()
    at.toggle(key="new_seed_each_time").set_value(False)
    at.number_input(key="seed").set_value(1234).run()
    first = compose(at).session_state["results"].pieces[0].midi_bytes
    again = compose(at).session_state["results"].pieces[0].midi_bytes
    assert first == again and at.session_state["seed"] == 1234
    button(at, "New seed").click().run()
    assert at.session_state["seed"] != 1234


def test_variations_each_get_their_own_piece_roll_and_file_name():
    at = open_app()
    widget(at, "slider", "Variations").set_value(3)
    at = compose(at)
    assert len(at.get("audio")) == 3 and len(piano_rolls(at)) == 3
    stems = [piece.file_stem for piece in at.session_state["results"].pieces]
    assert [stem.rsplit("-", 1)[1] for stem in stems] == ["1", "2", "3"]


def test_uploads_get_a_line_each_and_a_broken_file_does_not_stop_the_others():
    at = upload(open_app(), music_files(2) + [("broken.mid", b"this is no MIDI file")])
    lines = [text for text in texts(at, "markdown") if text.startswith(":material/")]
    assert len(lines) == 3 and "broken" in lines[2] and "skipped" in lines[2]
    assert "2 of 3 files used" in " ".join(texts(at, "caption"))
    assert any("piece0.mid (yours)" in options for options in [box.options for box in at.selectbox])
    assert not button(at, "Train").disabled


def test_a_piece_can_continue_an_uploaded_file_in_its_key():
    at = upload(open_app(), music_files(2))
    widget(at, "selectbox", "Start from").set_value("piece1.mid (yours)")
    widget(at, "selectbox", "Key lock").set_value("the key of the music I gave")
    at = compose(at)
    piece = at.session_state["results"].pieces[0]
    assert len(piece.primer) >= 4 and not at.error
    in_c_major = {0, 2, 4, 5, 7, 9, 11}  # drums have no key
    assert {note.pitch % 12 for note in piece.score.melodic_notes} <= in_c_major


def test_a_key_lock_on_the_key_of_no_music_says_it_is_off():
    at = open_app()
    widget(at, "selectbox", "Key lock").set_value("the key of the music I gave")
    assert "the key lock is off" in " ".join(texts(compose(at), "info"))


def test_music_too_short_for_the_sequence_length_gets_a_plain_message_at_once():
    at = upload(open_app(), [("short.mid", midi.write(scale_piece(1, notes=8)))])
    set_training(at, sequence_length=512)
    button(at, "Train").click().run()
    assert not at.exception
    (message,) = texts(at, "error")
    assert message.startswith("Could not start training. The training music is too short for a sequence length of 512")
    assert message.endswith("add files or lower the sequence length.")


def test_training_runs_in_the_background_resumes_and_its_model_is_kept_for_a_later_visit():
    from musicgen.bundle import bundle_to_zip

    at = upload(open_app(), music_files(4))
    set_training(at, epochs=1)
    at = train_until_done(at)
    assert "Training finished: 1 epochs" in at.success[0].value
    run_folder = Path(at.selectbox(key="model_choice").value)
    assert run_folder.parent.name == "runs" and run_folder.is_relative_to(Path(at.session_state["workspace"].folder))
    assert len(at.get("plotly_chart")) == 1  # the loss curve
    widget(at, "slider", "Epochs").set_value(2)
    at = train_until_done(at)
    assert "Resumed after epoch 1" in " ".join(texts(at, "info"))
    assert len(compose(at).get("audio")) == 1
    later = open_app()
    later.file_uploader(key="model_zip").set_value(("my-model.zip", bundle_to_zip(run_folder), "application/zip"))
    later.run()
    assert "Opened my-model.zip" in later.success[0].value
    assert Path(later.selectbox(key="model_choice").value).parent.name == "models"
    assert len(compose(later).get("audio")) == 1


def test_a_file_that_is_no_model_gets_a_plain_message_and_nothing_is_lost():
    at = upload(open_app(), music_files(2))
    at.file_uploader(key="model_zip").set_value(("holiday.zip", b"PK not really", "application/zip")).run()
    assert not at.exception
    assert texts(at, "error") == [
        "Could not open holiday.zip. This is not a musicgen model file (it should be a .zip downloaded from musicgen)."
    ]
    assert at.selectbox(key="model_choice").value.endswith("tiny")
    assert "2 of 2 files used" in " ".join(texts(at, "caption"))


def test_a_missing_model_is_reported_plainly_and_training_still_works(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_MODEL", str(tmp_path / "nowhere"))
    at = open_app()
    assert "The model that comes with musicgen is missing" in texts(at, "error")[0]
    assert [b.label for b in at.button] == ["Train"]


def test_a_damaged_model_is_reported_plainly(monkeypatch, tiny, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in tiny[0].iterdir():
        (damaged / path.name).write_bytes(path.read_bytes())
    (damaged / "vocabulary.json").write_text("{")
    monkeypatch.setenv("MUSICGEN_MODEL", str(damaged))
    at = open_app()
    expected = "Could not load the model. The model's vocabulary.json is damaged: it is not valid JSON."
    assert texts(at, "error") == [expected]


def test_without_a_synthesizer_the_page_says_so_once_and_shows_the_music(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICGEN_SOUNDFONT", str(tmp_path / "missing.sf2"))
    at = open_app()
    widget(at, "slider", "Variations").set_value(2)
    at = compose(at)
    assert len([text for text in texts(at, "info") if text.startswith("No sound")]) == 1
    assert len(at.get("audio")) == 0 and len(piano_rolls(at)) == 2
    assert [b.label for b in at.get("download_button")].count("Download MIDI") == 2


def test_a_second_visitor_waits_in_the_queue_and_sees_their_place():
    first = upload(open_app(), music_files(4))
    set_training(first, epochs=100)
    button(first, "Train").click().run()
    second = upload(open_app(), music_files(3))
    set_training(second, epochs=1)
    button(second, "Train").click().run()
    assert "You are next in the queue" in " ".join(texts(second, "info"))
    assert "You are next" not in " ".join(texts(first.run(), "info"))
    button(second, "Stop training").click().run()
    run_until(second, lambda at: "it left the queue" in " ".join(texts(at, "info")), "the second to leave the queue")
    button(first, "Stop training").click().run()
    run_until(first, lambda at: "Stopped after epoch" in " ".join(texts(at, "info")), "the first to stop")


def test_the_built_in_styles_are_offered_and_a_quartet_plays_on_its_instruments(monkeypatch):
    monkeypatch.delenv("MUSICGEN_MODEL")
    monkeypatch.delenv("MUSICGEN_MODEL_MUSIC")
    at = open_app()
    style = widget(at, "selectbox", "Compose in the style of")
    assert style.options[:2] == ["Bach chorales (built in)", "String quartets (Haydn, Mozart, Beethoven) (built in)"]
    style.set_value(str(Path(APP).resolve().parent / "checkpoints" / "string-quartets")).run()
    assert widget(at, "selectbox", "Instrument").value == "As written: each part its own"
    piece = compose(at).session_state["results"].pieces[0]
    assert {note.program for note in piece.score.notes} <= {40, 41, 42}
    assert len({note.program for note in piece.score.notes}) >= 2


def test_keras_state_outlives_the_page_runs():
    """Streamlit's clean-up after each run (keras.backend.clear_session) would reset Keras under a training
    running in another thread, and hold Python's lock for much of a second per visitor's run."""
    import keras

    names = [keras.layers.Dense(1).name for _ in range(2)]
    at = open_app()
    compose(at)
    assert keras.layers.Dense(1).name not in names  # Keras's global name counter was not reset


def test_the_page_shows_nothing_of_the_server_settings():
    at = open_app()
    shown = [element.type for element in at.main] + [element.type for element in at.sidebar]
    assert "help_info" not in shown and "json" not in shown
    assert os.environ["MUSICGEN_RUNS"] not in str(at.main)


def test_streamlit_collects_no_garbage_after_every_run():
    """A full collection after each run of each visitor held Python's lock ~0.2 s once TensorFlow was loaded."""
    import tomllib

    settings = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert settings["runner"]["postScriptGC"] is False
