"""End to end in Debian's Chromium against `streamlit run streamlit_app.py`, with the shipped model.

The server is started by the fixture with MUSICGEN_RUNS in a temporary folder, and
stopped afterwards. Trainings are kept small (short sequences, few epochs) so that the
whole file runs in a few minutes on two cores; waits are generous because those cores
may be busy with other work.
"""

import os
import re
from pathlib import Path

import pytest

from musicgen import midi
from tests.app_server import CHROMIUM, CHROMIUM_ARGS, REPOSITORY, compose, compose_button, open_page, running_server

pytestmark = pytest.mark.browser

SHIPPED_MODEL = Path(os.environ.get("MUSICGEN_MODEL") or REPOSITORY / "checkpoints" / "bach")
DEMO = REPOSITORY / "samples" / "demo"
SCREENSHOT = REPOSITORY / "docs" / "screenshot.png"
PIECE_SECONDS = 60  # for a piece after Compose, even while another visitor trains
TRAINING_SECONDS = 300  # for a small training to get somewhere
SCREENSHOT_SEED = 2  # a full 30 s piece with the shipped model at its recommended temperature

if not (SHIPPED_MODEL / "model.weights.h5").exists():
    pytest.skip(f"the shipped model is not trained yet: {SHIPPED_MODEL} has no weights", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api")
if not Path(CHROMIUM).exists():
    pytest.skip(f"Chromium is not installed at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(URL, server process, server log) of the app served by `streamlit run` on a free port; its process group
    is stopped afterwards."""
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    settings = {"MUSICGEN_RUNS": str(tmp_path_factory.mktemp("runs")), "MUSICGEN_MAX_TRAININGS": "1"}
    try:
        with running_server(settings, log) as (url, process):
            yield url, process, log
    finally:
        if "Traceback" in log.read_text(errors="replace"):
            print(log.read_text(errors="replace")[-5000:])


@pytest.fixture(scope="module")
def server(served):
    return served[0]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def set_slider(page, label: str, key: str, presses: int = 1) -> None:
    """Move a slider with the keyboard: Home, End or arrows."""
    slider = page.get_by_role("slider", name=label)
    slider.focus()
    for _ in range(presses):
        slider.press(key)


def upload_midi(page, files: list[tuple[str, bytes]]) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Your MIDI files")
    payloads = [{"name": name, "mimeType": "audio/midi", "buffer": data} for name, data in files]
    uploader.locator("input[type=file]").set_input_files(payloads)


def demo_files() -> list[tuple[str, bytes]]:
    folk = sorted(DEMO.glob("folk_*.mid"))
    return [(path.name, path.read_bytes()) for path in folk]


def wait_for_text(page, pattern: str, seconds: float = TRAINING_SECONDS) -> None:
    """Wait for text on the page; on a timeout, fail with what the page shows instead."""
    try:
        page.get_by_text(re.compile(pattern)).first.wait_for(timeout=seconds * 1000)
    except playwright_api.TimeoutError:
        shown = page.get_by_test_id("stMain").inner_text()
        raise AssertionError(f"{pattern!r} not seen in {seconds} s; the page shows:\n{shown[-1500:]}") from None


def start_small_training(page, files: list[tuple[str, bytes]], epochs_key: str, presses: int = 1) -> None:
    upload_midi(page, files)
    wait_for_text(page, r"files used", 60)
    set_slider(page, "Epochs", epochs_key, presses)
    set_slider(page, "Sequence length", "Home")  # 16 tokens: quick epochs
    page.get_by_role("button", name="Train", exact=True).click()


def keep_seed(page, seed: int) -> None:
    """Type a seed: it is kept for every Compose until changed."""
    field = page.get_by_role("spinbutton", name="Seed")
    field.fill(str(seed))
    field.press("Enter")
    page.locator("input[role=switch][aria-label='New seed at each Compose']:not(:checked)").wait_for()


def downloaded_midi(page, number: int = 0) -> bytes:
    with page.expect_download() as download:
        page.get_by_role("button", name="Download MIDI").nth(number).click()
    return Path(download.value.path()).read_bytes()


def test_the_first_click_right_away_plays_with_no_compile_and_no_tensorflow(browser, served):
    """Compose clicked the moment the button shows (this test runs first, on a server nobody used) gives playable
    audio; composing never loads TensorFlow in the server, so there is no compile to wait for."""
    url, process, _ = served
    page = open_page(browser, url)
    compose(page, PIECE_SECONDS)
    mapped = Path(f"/proc/{process.pid}/maps").read_text()
    assert "tensorflow" not in mapped and "numpy" in mapped
    source = page.locator("audio").first.get_attribute("src")
    sound = page.request.get(source if source.startswith("http") else url + source).body()
    assert sound[:2] in (b"\xff\xfb", b"\xff\xfa") and len(sound) > 50_000  # MPEG-1 Layer III, ~30 s
    page.context.close()


def test_two_visitors_at_once_are_sampled_together_each_with_the_pieces_of_their_seed(browser, served):
    url, _, log = served
    long_pieces, short_piece = open_page(browser, url), open_page(browser, url)
    keep_seed(long_pieces, 11)
    keep_seed(short_piece, 12)
    set_slider(long_pieces, "Variations", "End")  # 4 pieces of 120 s: sampling takes a while
    set_slider(long_pieces, "Length (seconds)", "End")
    long_pieces.wait_for_timeout(500)
    compose_button(long_pieces).click()
    compose(short_piece, PIECE_SECONDS)
    long_pieces.locator("audio").nth(3).wait_for(timeout=PIECE_SECONDS * 1000)
    assert re.search(r"\d+ pieces? join \d+ being sampled", log.read_text(errors="replace"))
    batched = downloaded_midi(short_piece)
    assert batched not in {downloaded_midi(long_pieces, number) for number in range(4)}
    for seed in (13, 12):  # another piece, then seed 12's again, alone this time (the same audio keeps its URL)
        keep_seed(short_piece, seed)
        compose(short_piece, PIECE_SECONDS)
    assert downloaded_midi(short_piece) == batched
    long_pieces.context.close()
    short_piece.context.close()


def test_compose_with_the_shipped_model_plays_shows_and_downloads_the_piece(browser, server):
    page = open_page(browser, server, height=1500)
    keep_seed(page, SCREENSHOT_SEED)  # the same piece each time, for the screenshot
    compose(page)
    roll = page.locator(".piano-roll svg").first
    roll.wait_for(timeout=30_000)
    assert page.locator("audio").count() == 1
    page.get_by_text(re.compile(r"^Originality: ")).first.wait_for(timeout=PIECE_SECONDS * 1000)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download MIDI").click()
    assert re.fullmatch(rf"musicgen-{re.escape(SHIPPED_MODEL.name)}-seed\d+\.mid", download.value.suggested_filename)
    score = midi.read(Path(download.value.path()).read_bytes())
    seed, seconds, notes = re.search(r"Seed (\d+) · (\d+) seconds · (\d+) notes", page.inner_text("body")).groups()
    assert download.value.suggested_filename == f"musicgen-{SHIPPED_MODEL.name}-seed{seed}.mid"
    assert len(score.notes) == int(notes) > 0 and score.duration_seconds <= int(seconds) + 1 <= 31
    assert roll.locator("rect.note").count() == len(score.notes)  # the page kept every bar of the SVG
    page.mouse.move(700, 5)  # no tooltip in the picture
    page.wait_for_timeout(1000)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOT)
    page.context.close()


def test_uploads_are_reported_file_by_file_and_training_stops_and_resumes(browser, server):
    page = open_page(browser, server)
    start_small_training(page, demo_files() + [("broken.mid", b"MThd but nothing else")], "Home")
    page.get_by_text(re.compile(r"broken\.mid: skipped")).wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"2 of 3 files used")).wait_for(timeout=30_000)
    wait_for_text(page, r"Training finished: 1 epochs")
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the loss curve
    set_slider(page, "Epochs", "End")  # 100 epochs: long enough to stop it
    page.get_by_role("button", name="Train", exact=True).click()
    wait_for_text(page, r"Resumed after epoch 1")
    wait_for_text(page, r"Epoch ([3-9]|\d\d+) of 100")  # two epochs done, the third on
    page.get_by_role("button", name="Stop training").click()
    wait_for_text(page, r"Stopped after epoch \d+")
    stopped_after = int(re.search(r"Stopped after epoch (\d+)", page.inner_text("body")).group(1))
    assert 2 <= stopped_after < 100
    page.get_by_role("button", name="Train", exact=True).click()
    wait_for_text(page, rf"Resumed after epoch {stopped_after}\b")
    page.get_by_role("button", name="Stop training").click()
    wait_for_text(page, r"Stopped after epoch \d+")
    page.context.close()


def test_two_visitors_at_once_see_only_their_own_work(browser, server):
    trainer, composer = open_page(browser, server), open_page(browser, server)
    start_small_training(trainer, demo_files(), "End")
    wait_for_text(trainer, r"Epoch \d+ of 100")
    seconds = compose(composer)
    print(f"a piece took {seconds:.1f} s from the click while the other visitor trained")
    trainer.get_by_text(re.compile(r"Epoch \d+ of 100")).first.wait_for(timeout=10_000)  # still training
    composer_text, trainer_text = composer.inner_text("body"), trainer.inner_text("body")
    assert "folk_arkansas_traveller.mid:" in trainer_text and "folk_arkansas_traveller.mid:" not in composer_text
    assert not re.search(r"Epoch \d+ of|Stop training|Resumed after", composer_text)
    assert trainer.locator("audio").count() == 0 and "Your piece" not in trainer_text
    trainer.get_by_role("button", name="Stop training").click()
    wait_for_text(trainer, r"Stopped after epoch \d+")
    trainer.context.close()
    composer.context.close()
