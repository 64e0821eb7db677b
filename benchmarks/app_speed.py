"""How fast the app feels: `streamlit run` to a usable page, and a click on Compose to playable audio.

    python -m benchmarks.app_speed                       # the shipped model, 8 pieces of 30 s
    python -m benchmarks.app_speed --pieces 20 --model checkpoints/bach

Drives Debian's Chromium (/usr/bin/chromium) with Playwright against a fresh
`streamlit run streamlit_app.py` on a free port, and prints:

- page ready: from starting the server to the Compose button in the page, for the first
  visitor (TensorFlow and the model load) and for a second one (everything cached);
- Compose -> audio: from the click to the new audio player with its sound fetched and
  ready to play (readyState >= 3), for 30 s of music; the first click right after the
  page is ready, then the median and worst of the others (made 3 s apart);
- the same while a second visitor trains a model in the same process: with that visitor's
  page open in the same browser (its redrawing progress and loss curve then share the two
  cores too), and with it closed (as when the visitor is on another computer);
- the same work in-process without Streamlit, stage by stage (sample, MIDI, FLAC).

Targets: page ready < 10 s, Compose -> audio < 1.5 s on 2 CPU cores. Nothing is asserted:
the figures depend on the machine and on what else runs on it (the load is printed).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from tests.app_server import CHROMIUM, CHROMIUM_ARGS, REPOSITORY, compose, open_page, streamlit_server

SAMPLE_RATE_HZ = 32_000  # as streamlit_app.SAMPLE_RATE_HZ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPOSITORY / "checkpoints" / "bach")
    parser.add_argument("--pieces", type=int, default=8, help="clicks on Compose after the first")
    arguments = parser.parse_args()
    print(f"load average before: {' '.join(f'{load:.1f}' for load in os.getloadavg())} on {os.cpu_count()} cores")
    measure_in_browser(arguments.model.resolve(), arguments.pieces)
    measure_in_process(arguments.model.resolve(), arguments.pieces)
    print(f"load average after: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")


def measure_in_browser(model: Path, pieces: int) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="musicgen-benchmark-") as runs, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        started = time.monotonic()
        with streamlit_server({"MUSICGEN_MODEL": str(model), "MUSICGEN_RUNS": runs}) as url:
            print(f"server answering:          {time.monotonic() - started:5.2f} s after `streamlit run`")
            page = open_page(browser, url, seconds=300)
            print(f"page ready, first visitor: {time.monotonic() - started:5.2f} s after `streamlit run`")
            print(f"Compose -> audio, first:   {compose(page, 120):5.2f} s (right after the page was ready)")
            print(f"Compose -> audio, next {pieces}:  {summary(compose_several(page, pieces))}")
            second_started = time.monotonic()
            trainer = open_page(browser, url, seconds=300)
            print(f"page ready, second visitor: {time.monotonic() - second_started:4.2f} s after opening it")
            start_training(trainer)
            busy = summary(compose_several(page, pieces))
            print(f"Compose -> audio while another visitor trains, their page open here too: {busy}")
            trainer.context.close()  # the training goes on; only its page redrawing here stops
            busy = summary(compose_several(page, pieces))
            print(f"Compose -> audio while another visitor trains, their page elsewhere: {busy}")
        browser.close()


def summary(seconds: list[float]) -> str:
    return f"median {statistics.median(seconds):.2f} s, worst {max(seconds):.2f} s"


def start_training(page) -> None:
    """Train on the two folk tunes of samples/demo for 100 epochs; return once the first epoch is done."""
    files = [
        {"name": path.name, "mimeType": "audio/midi", "buffer": path.read_bytes()}
        for path in sorted((REPOSITORY / "samples" / "demo").glob("folk_*.mid"))
    ]
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="Your MIDI files")
    uploader.locator("input[type=file]").set_input_files(files)
    page.get_by_text("files used").first.wait_for(timeout=60_000)
    epochs = page.get_by_role("slider", name="Epochs")
    epochs.focus()
    epochs.press("End")
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_text(re.compile(r"Epoch ([2-9]|\d\d+) of 100")).first.wait_for(timeout=300_000)


def compose_several(page, count: int) -> list[float]:
    """Seconds of `count` clicks on Compose, 3 s apart (someone listening a little)."""
    times = []
    for _ in range(count):
        time.sleep(3)
        times.append(compose(page, 120))
    return times


def measure_in_process(model: Path, pieces: int) -> None:
    """The stages behind one click, timed without Streamlit or a browser."""
    from musicgen import audio, midi, sessions
    from musicgen.sample import SampleConfig

    started = time.perf_counter()
    composer = sessions.load_composer(model)
    loaded = time.perf_counter()
    sessions.warm_up(composer)
    print(
        f"in process: TensorFlow + model {loaded - started:.2f} s, sampler warm-up {time.perf_counter() - loaded:.2f} s"
    )
    stages = {"sample": [], "MIDI": [], "FLAC": []}
    for seed in range(pieces):
        config = SampleConfig(max_seconds=30, max_notes=600, seed=seed, top_p=0.95, bpm=90)
        at = time.perf_counter()
        score = composer.sampler.scores(config)[0]
        stages["sample"].append(time.perf_counter() - at)
        at = time.perf_counter()
        data = midi.write(score)
        stages["MIDI"].append(time.perf_counter() - at)
        at = time.perf_counter()
        audio.render(data, sample_rate_hz=SAMPLE_RATE_HZ)
        stages["FLAC"].append(time.perf_counter() - at)
    print("in process, median per piece: " + ", ".join(f"{n} {statistics.median(t):.3f} s" for n, t in stages.items()))


if __name__ == "__main__":
    main()
