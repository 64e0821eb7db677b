"""A crowd on one process: Chromium pages on one `streamlit run`, clicking Compose at the same moment.

    python -m benchmarks.crowd                                    # 8 visitors, 1 piece of 30 s each, 2 rounds
    python -m benchmarks.crowd --visitors 4 --variations 4 --seconds 120 --train
    python -m benchmarks.crowd --visitors 1 --variations 4 --seconds 120 --rounds 3

Drives Debian's Chromium (/usr/bin/chromium) with Playwright against a fresh
`streamlit run streamlit_app.py` on a free port, once over localhost and once over an
emulated link (Chromium's network conditions: 10 Mbit/s down, 2 Mbit/s up, 50 ms latency;
DevTools throttles what goes over HTTP, the page's files and the audio, not the WebSocket
that carries the page's updates). Each time it prints:

- page ready: from starting `streamlit run` to the Compose button in the first page;
- first click: that page clicks Compose the moment the button shows; seconds to playable
  audio (the player has its sound and can play: readyState >= 3);
- the crowd: every page clicks Compose at once (one click after the other, as fast as the
  browser takes them), for R rounds; from each page's own click to its first playable player
  and to all of them: median, 95th percentile and worst, and the pages that showed an error;
- the peak memory (resident) of the server with its children (FluidSynth, LAME) during the crowd.

With --train one more page trains a model on the demo folk tunes meanwhile. The browsers
run on the same cores as the server, so part of every wait is theirs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tests.app_server import AUDIO_SOURCES, CHROMIUM, CHROMIUM_ARGS, REPOSITORY, compose, compose_button, running_server

EMULATED_LINK = {"offline": False, "latency": 50, "downloadThroughput": 10e6 / 8, "uploadThroughput": 2e6 / 8}
READY_PLAYERS = """before => Array.from(document.querySelectorAll('audio'))
    .filter(audio => audio.src && !before.includes(audio.src) && audio.readyState >= 3).length"""
WAIT_SECONDS = 300  # for any one page to get its pieces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=8, help="pages that click Compose together")
    parser.add_argument("--rounds", type=int, default=2, help="clicks of the whole crowd")
    parser.add_argument("--variations", type=int, default=1, choices=range(1, 5))
    parser.add_argument("--seconds", type=int, default=30, choices=range(10, 121, 5), metavar="10..120")
    parser.add_argument("--train", action="store_true", help="one more page trains a model meanwhile")
    parser.add_argument("--localhost-only", action="store_true", help="leave out the emulated link")
    parser.add_argument("--model", type=Path, default=REPOSITORY / "checkpoints" / "bach")
    arguments = parser.parse_args()
    print(f"{arguments.visitors} visitors x {arguments.rounds} rounds, {arguments.variations} x {arguments.seconds} s")
    print(f"load average before: {' '.join(f'{load:.1f}' for load in os.getloadavg())} on {os.cpu_count()} cores")
    for link in [None] if arguments.localhost_only else [None, EMULATED_LINK]:
        print("\n" + ("emulated link: 10 Mbit/s down, 2 Mbit/s up, 50 ms" if link else "localhost"))
        measure(arguments, link)
    print(f"\nload average after: {' '.join(f'{load:.1f}' for load in os.getloadavg())}")


def measure(arguments, link: dict | None) -> None:
    """Start the app, time the first visitor, then the crowd."""
    from playwright.sync_api import sync_playwright

    settings = {"MUSICGEN_MODEL": str(arguments.model.resolve())}
    with tempfile.TemporaryDirectory(prefix="musicgen-crowd-") as runs, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        started = time.monotonic()
        with running_server(settings | {"MUSICGEN_RUNS": runs}) as (url, server):
            first = open_visitor(browser, url, link)
            print(f"page ready:  {time.monotonic() - started:5.2f} s after `streamlit run`")
            print(f"first click: {compose(first, WAIT_SECONDS):5.2f} s to playable audio for 30 s of music")
            pages = [first] + [open_visitor(browser, url, link) for _ in range(arguments.visitors - 1)]
            if arguments.train:
                start_training(open_visitor(browser, url, link))
            for page in pages:
                choose_pieces(page, arguments.variations, arguments.seconds)
            with PeakMemory(server.pid) as memory:
                rounds = [crowd_round(pages, arguments.variations) for _ in range(arguments.rounds)]
            report(rounds, memory.peak_bytes)
        browser.close()


def open_visitor(browser, url: str, link: dict | None):
    """A new visitor's page over the link, once its Compose button shows."""
    page = browser.new_context(viewport={"width": 1400, "height": 1100}).new_page()
    if link:
        devtools = page.context.new_cdp_session(page)
        devtools.send("Network.enable")
        devtools.send("Network.emulateNetworkConditions", link)
    page.goto(url)
    compose_button(page).wait_for(timeout=WAIT_SECONDS * 1000)
    return page


def choose_pieces(page, variations: int, seconds: int) -> None:
    """Set the Variations and Length sliders with the keyboard."""
    for label, presses in (("Variations", variations - 1), ("Length (seconds)", (seconds - 10) // 5)):
        slider = page.get_by_role("slider", name=label)
        slider.focus()
        slider.press("Home")
        for _ in range(presses):
            slider.press("ArrowRight")
    page.wait_for_timeout(500)  # let the page settle on the new values


def start_training(page) -> None:
    """Train on the folk tunes of samples/demo for 100 epochs; return once two epochs are done (it runs steadily)."""
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
    page.get_by_text(re.compile(r"Epoch ([3-9]|\d\d+) of 100")).first.wait_for(timeout=WAIT_SECONDS * 1000)


def crowd_round(pages: list, players: int) -> list[tuple[float, float, bool]]:
    """Every page clicks Compose; per page, seconds from its click to its first and to its last playable player,
    and whether it showed an error."""
    before = [page.evaluate(AUDIO_SOURCES) for page in pages]
    clicked = []
    for page in pages:
        compose_button(page).click()
        clicked.append(time.monotonic())
    first, last = [None] * len(pages), [None] * len(pages)
    deadline = time.monotonic() + WAIT_SECONDS
    while None in last and time.monotonic() < deadline:
        for number, page in enumerate(pages):
            if last[number] is None:
                ready = page.evaluate(READY_PLAYERS, before[number])
                now = time.monotonic() - clicked[number]
                first[number] = first[number] or (now if ready else None)
                last[number] = now if ready >= players else None
        time.sleep(0.02)
    errors = [page.get_by_text(re.compile("^Could not ")).count() > 0 for page in pages]
    return [(a or float("inf"), b or float("inf"), error) for a, b, error in zip(first, last, errors, strict=True)]


def report(rounds: list[list[tuple[float, float, bool]]], peak_bytes: int) -> None:
    results = [result for one_round in rounds for result in one_round]
    for name, index in (("first player", 0), ("all players", 1)):
        print(f"crowd, click -> {name:12}: {spread([result[index] for result in results])}")
    print(f"pages with an error: {sum(result[2] for result in results)} of {len(results)}")
    print(f"peak memory of the server and its children: {peak_bytes / 1e9:.2f} GB")


def spread(seconds: list[float]) -> str:
    """Median, 95th percentile and worst."""
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):5.2f} s, p95 {p95:5.2f} s, max {ordered[-1]:5.2f} s"


class PeakMemory:
    """The largest sum of resident memory of a process group seen while the block runs (sampled every 0.1 s)."""

    def __init__(self, group: int):
        self.group, self.peak_bytes = group, 0
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._watcher.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._watcher.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_bytes = max(self.peak_bytes, group_resident_bytes(self.group))


def group_resident_bytes(group: int) -> int:
    """Resident memory of every process in a process group, from /proc."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[2]) == group:  # the process group is the fifth field of /proc/PID/stat
            total += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # resident pages, the 24th field
    return total


if __name__ == "__main__":
    main()
