"""What every ``dsip`` service command does around its service: announce readiness, wait."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["until_stopped", "write_ready"]


def write_ready(path: Path | None, info: Mapping[str, Any]) -> None:
    """Write ``info`` as JSON to ``path`` atomically (a supervisor or test polls for the file;
    it never sees half of it). Nothing when ``path`` is ``None``."""
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(info)))
    tmp.replace(path)


async def until_stopped() -> None:
    """Return on SIGTERM or SIGINT: every service then shuts down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
