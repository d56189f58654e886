"""The trust demo runs end to end with every check passing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from dsip.demo_trust import demo_trust
from dsip.services.localca import LocalCA

pytestmark = [pytest.mark.timeout(60), pytest.mark.network]


async def test_demo_trust(local_ca: LocalCA, tmp_path: Path) -> None:
    out = io.StringIO()
    checks: list[tuple[bool, str]] = []
    await demo_trust(
        Console(file=out, width=200), local_ca, tmp_path, lambda ok, what: checks.append((ok, what))
    )
    assert len(checks) == 9
    assert [what for ok, what in checks if not ok] == []
    text = out.getvalue()
    assert "Alice Example" in text
    assert "revoked" in text
