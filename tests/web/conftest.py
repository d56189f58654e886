"""Fixtures for the browser client: a relay serving ``web/`` over HTTPS on loopback, and a
real headless Chromium (Debian ``chromium``) driven by Playwright for Python.

Chromium runs with fake media devices: its microphone is a WAV file holding a 1 kHz tone,
so the Python agent can detect the browser's audio with ``dsip.media.tone``. No browser is
downloaded: Playwright is pointed at the system executable.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dsip.config import RelayConfig
from dsip.core.identity import KeyPair
from dsip.media.tone import write_tone_wav
from dsip.services.localca import LocalCA
from dsip.services.relay import Relay
from dsip.services.webroot import default_web_root
from dsip.storage import open_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TONE_HZ = 1000.0


@pytest.fixture(scope="session")
def web_ca() -> LocalCA:
    return LocalCA.create()


@pytest.fixture
async def web_relay(tmp_path: Path, web_ca: LocalCA) -> AsyncIterator[Relay]:
    cfg = RelayConfig(ws_port=0, store=f"sqlite:///{tmp_path}/relay.db")
    root = default_web_root()
    assert root is not None, "the web/ client is missing"
    relay = Relay(
        cfg,
        KeyPair.generate(),
        await open_store(cfg.store),
        server_ssl=web_ca.server_context(),
        web_root=root,
    )
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
async def browser(tmp_path: Path, web_relay: Relay) -> AsyncIterator[Any]:
    """Chromium, closed before the relay stops (so the relay sees its clients leave)."""
    del web_relay
    playwright_api = pytest.importorskip("playwright.async_api")
    if CHROMIUM is None:  # pragma: no cover - scripts/system-packages.txt installs it
        pytest.skip("Debian chromium is not installed (scripts/system-packages.txt)")
    wav = write_tone_wav(tmp_path / "tone.wav")
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--no-proxy-server",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}",
                "--allow-loopback-in-peer-connection",
                "--autoplay-policy=no-user-gesture-required",
                "--font-render-hinting=none",
                "--disable-lcd-text",
            ],
        )
        try:
            yield b
        finally:
            await b.close()


async def open_client(browser: Any, relay: Relay, *query: str) -> Any:
    """A fresh browser context (own IndexedDB) on the relay's page, connected to the relay."""
    context = await browser.new_context(
        ignore_https_errors=True,  # the relay's certificate comes from a per-run local CA
        viewport={"width": 900, "height": 700},
        geolocation={"latitude": 40.7128, "longitude": -74.006, "accuracy": 12},
        permissions=["geolocation"],
        device_scale_factor=1,
    )
    page = await context.new_page()
    qs = "&".join(("ice=loopback", *query))
    await page.goto(f"https://localhost:{relay.ws_port}/?{qs}")
    await page.wait_for_selector("body[data-relay=connected]", state="attached", timeout=10_000)
    return page


SCREENSHOTS = Path(__file__).parent / "screenshots"
UPDATE_ENV = "DSIP_UPDATE_SCREENSHOTS"


def compare_png(actual_png: bytes, name: str, *, max_changed: float = 0.01) -> float:
    """Compare a screenshot with ``screenshots/<name>.png``; return the fraction of pixels
    that differ noticeably (any channel by more than 40 of 255). Fails above ``max_changed``
    or when the size differs. With ``DSIP_UPDATE_SCREENSHOTS=1`` the reference is
    (re)written instead; a missing reference without it is a failure, never a silent pass.
    """
    import io
    import os

    from PIL import Image

    ref_path = SCREENSHOTS / f"{name}.png"
    if os.environ.get(UPDATE_ENV) == "1":
        SCREENSHOTS.mkdir(exist_ok=True)
        ref_path.write_bytes(actual_png)
        return 0.0
    assert ref_path.is_file(), f"no reference {ref_path}; generate it with {UPDATE_ENV}=1"
    actual = np.asarray(Image.open(io.BytesIO(actual_png)).convert("RGB"), dtype=np.int16)
    ref = np.asarray(Image.open(ref_path).convert("RGB"), dtype=np.int16)
    assert actual.shape == ref.shape, f"{name}: size {actual.shape} differs from {ref.shape}"
    changed = float((np.abs(actual - ref).max(axis=2) > 40).mean())
    assert changed <= max_changed, f"{name}: {changed:.2%} of pixels differ from the reference"
    return changed
