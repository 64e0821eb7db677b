"""`streamlit run streamlit_app.py` on a free port, opened in Debian's Chromium: for the browser tests and
benchmarks/crowd.py."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
CHROMIUM_ARGS += ["--disable-sync", "--no-first-run"]
NEW_AUDIO_READY = """([before, count]) => {
    const ready = Array.from(document.querySelectorAll('audio'))
        .filter(audio => audio.src && !before.includes(audio.src) && audio.readyState >= 3);
    return ready.length >= count;
}"""
AUDIO_SOURCES = "Array.from(document.querySelectorAll('audio')).map(a => a.src).join(' ')"


@contextmanager
def streamlit_server(settings: dict[str, str], log: Path | None = None, start_seconds: float = 120) -> Iterator[str]:
    """The app's URL once it answers, with `settings` added to the environment; its process group stops after."""
    with running_server(settings, log, start_seconds) as (url, _):
        yield url


@contextmanager
def running_server(settings: dict[str, str], log: Path | None = None, start_seconds: float = 120):
    """(URL, server process) once the app answers; the server's process group stops after."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py"]
    command += ["--server.port", str(port), "--server.headless", "true"]
    with open(log or os.devnull, "wb") as output:
        server = subprocess.Popen(
            command,
            cwd=REPOSITORY,
            env={**os.environ, **settings},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://localhost:{port}"
    try:
        wait_for_health(url, server, start_seconds)
        yield url, server
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the helper processes it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read() == b"ok":
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("streamlit did not start in time")


def open_page(browser, url: str, height: int = 1100, seconds: float = 120):
    """A page in a fresh browser context (a new visitor), once the Compose button is there."""
    page = browser.new_context(viewport={"width": 1400, "height": height}, accept_downloads=True).new_page()
    page.goto(url)
    compose_button(page).wait_for(timeout=seconds * 1000)
    return page


def compose_button(page):
    return page.get_by_role("button", name="Compose", exact=True)


def compose(page, seconds: float = 60, players: int = 1) -> float:
    """Click Compose and wait until `players` new audio players can play their sound; the seconds it took."""
    before = page.evaluate(AUDIO_SOURCES)
    started = time.monotonic()
    compose_button(page).click()
    page.wait_for_function(NEW_AUDIO_READY, arg=[before, players], timeout=seconds * 1000)
    return time.monotonic() - started
