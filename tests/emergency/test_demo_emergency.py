"""The emergency demo step runs and every check it narrates holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from dsip.services.localca import LocalCA
from dsip.services.psap import demo_emergency

pytestmark = pytest.mark.timeout(60)


async def test_demo_emergency(tmp_path: Path) -> None:
    checks: list[tuple[bool, str]] = []
    await demo_emergency(
        Console(file=(tmp_path / "out.txt").open("w")),
        LocalCA.create(),
        tmp_path,
        lambda ok, what: checks.append((ok, what)),
    )
    assert len(checks) == 4
    assert all(ok for ok, _ in checks), checks
