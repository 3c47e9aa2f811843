"""The kiosk screen as a device shows it, for benchmarks: Chromium started by systemd/kiosk-browser (the kiosk
unit's launcher and flags) on an Xvfb screen, and the page driven through its DevTools port (Playwright over CDP)
as a visitor would: a typed question, then the microphone button and a spoken one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.bench_voice import PHRASES

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "systemd" / "kiosk-browser"
CHROMIUM = os.environ.get("KIOSKD_TEST_CHROMIUM", "/usr/bin/chromium")
TYPED_QUESTION = "Where can I buy a ticket? Answer in two sentences."


@contextlib.contextmanager
def running(argv: list[str], log: Path, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process, its output in `log`, terminated (then killed) on the way out."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("KIOSKD_")}, **extra}


@contextlib.contextmanager
def xvfb(screen: str, workdir: Path) -> Iterator[tuple[str, int]]:
    """An X server for Chromium (its display and pid); Xvfb picks a free display number and writes it to the
    pipe, so parallel runs on a shared machine never collide."""
    read_fd, write_fd = os.pipe()
    with running(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{screen}x24", "-nolisten", "tcp"],
                 workdir / "xvfb.log", pass_fds=(write_fd,)) as proc:
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb did not start: {(workdir / 'xvfb.log').read_text()[-500:]}")
        yield f":{number}", proc.pid


def browser_env(flags: tuple[str, ...], url: str, display: str, workdir: Path, cdp_port: int,
                screen: str) -> dict[str, str]:
    """kiosk-browser's environment as the unit sets it, plus what a root test machine needs (--no-sandbox) and
    the DevTools port the bench drives the page through."""
    width, height = screen.split("x")
    extra = ("--no-sandbox", f"--remote-debugging-port={cdp_port}", f"--window-size={width},{height}",
             *flags)
    runtime = workdir / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return clean_env(KIOSK_URL=f"{url}/", KIOSK_READY_URL=f"{url}/readyz", KIOSK_CHROMIUM=CHROMIUM,
                     KIOSK_PYTHON=sys.executable, KIOSK_PROFILE_DIR=str(workdir / "profile"), DISPLAY=display,
                     XDG_RUNTIME_DIR=str(runtime), HOME=str(workdir), KIOSK_EXTRA_FLAGS=" ".join(extra))


async def drive_page(cdp_port: int, mic: Any, out_wav: Path) -> dict[str, str]:
    """One typed and one spoken question through the kiosk page; the answers as the page shows them."""
    from playwright.async_api import async_playwright

    from tests.browser import ask, last_answer, wait_answer_state, wait_status
    from tests.speech import spoken

    async with async_playwright() as pw:
        browser = await connect(pw, cdp_port)
        page = browser.contexts[0].pages[0]
        await wait_status(page, "ready", within=60)
        await ask(page, TYPED_QUESTION)
        await wait_answer_state(page, "done", within=180)
        typed = await last_answer(page).inner_text()
        mic_button = page.get_by_test_id("mic")
        await page.wait_for_function("() => document.querySelector('[data-testid=mic]')?.dataset.state"
                                     " === 'idle'", timeout=120_000)
        await mic_button.click()
        mic.say(spoken(PHRASES[0]))
        await page.wait_for_function("() => document.querySelectorAll('[data-testid=message]"
                                     "[data-role=assistant]').length >= 2", timeout=60_000)
        await wait_answer_state(page, "done", within=180)
        said = await last_answer(page).inner_text()
    spoken_bytes = await wait_file_still(out_wav)
    return {"typed": typed, "spoken": said, "speaker_wav_bytes": str(spoken_bytes)}


async def connect(pw: Any, cdp_port: int) -> Any:
    """Playwright on the running Chromium's DevTools port, once it shows the page."""
    deadline = time.monotonic() + 60
    while True:
        try:
            browser = await pw.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}")
        except Exception:  # not listening yet (Playwright raises its own Error type)
            if time.monotonic() > deadline:
                raise
        else:
            if browser.contexts and browser.contexts[0].pages:
                return browser
            await browser.close()
        if time.monotonic() > deadline:
            raise RuntimeError("Chromium showed no page within 60 s")
        await asyncio.sleep(0.5)


async def wait_file_still(path: Path, quiet_s: float = 3.0, limit_s: float = 120.0) -> int:
    """Until the speaker's WAV file has not grown for `quiet_s` seconds (the answer has been read aloud); its size."""
    deadline, last, since = time.monotonic() + limit_s, -1, time.monotonic()
    while time.monotonic() < deadline:
        size = await asyncio.to_thread(_file_size, path)
        if size != last:
            last, since = size, time.monotonic()
        elif size > 0 and time.monotonic() - since >= quiet_s:
            return size
        await asyncio.sleep(0.25)
    raise RuntimeError(f"nothing was spoken to {path} (or it never stopped) within {limit_s:.0f} s")


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
