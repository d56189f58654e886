"""``dsip psap-test-call`` as a process: exit 0 when a PSAP answers, 3 (native dialer) not."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.emergency.emfix import World

pytestmark = pytest.mark.timeout(60)


async def _dial(world: World, tmp_path: Path, timeout: float) -> tuple[int, str]:
    ca = world.ca.write_ca_pem(tmp_path / "ca.pem")
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "dsip"), "psap-test-call",
        "--relay", world.relay_uri, "--psap", world.psap_did,
        "--device-key", str(tmp_path / "device.key"),
        "--lat", "42.746", "--lon", "-73.759", "--answer-timeout", str(timeout),
        "--trust-ca", str(ca), "--pin-host", "911.us=127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_answered_call_exits_zero(world: World, tmp_path: Path) -> None:
    psap = await world.psap(auto_answer=True)
    code, out = await _dial(world, tmp_path, 10)
    assert code == 0, out
    assert f"answered by {world.psap_did}" in out
    (taken,) = psap.board.values()
    assert taken.assessment.location is not None
    assert taken.assessment.location.keystore == "file"
    assert (tmp_path / "device.key").stat().st_mode & 0o777 == 0o600


async def test_no_answer_exits_three_use_native_dialer(world: World, tmp_path: Path) -> None:
    await world.psap()  # nobody takes calls
    code, out = await _dial(world, tmp_path, 1.0)
    assert code == 3, out
    assert "use native dialer: session.timeout" in out
