"""``demo_web`` runs end to end: page served, headless browser call, tone heard."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from dsip.demo_web import demo_web
from dsip.services.localca import LocalCA

pytestmark = pytest.mark.timeout(60)


async def test_demo_web_checks_all_pass(tmp_path: Path, web_ca: LocalCA) -> None:
    pytest.importorskip("playwright.async_api")
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")
    checks: list[tuple[bool, str]] = []
    out = io.StringIO()
    await demo_web(
        Console(file=out, width=120), web_ca, tmp_path, lambda ok, what: checks.append((ok, what))
    )
    assert len(checks) == 5, out.getvalue()
    assert all(ok for ok, _ in checks), checks
    assert any("1000 Hz" in what or "Hz" in what for _, what in checks)
