"""Running SIPp (Debian ``sip-tester``) as the real SIP peer of a test, on loopback."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsip.services.ports import free_port

DATA = Path(__file__).parent / "data"


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if found is None:
        pytest.skip("sipp not installed (Debian package sip-tester)")
    return found


@dataclass(frozen=True)
class SippResult:
    returncode: int
    output: str


async def run_sipp(
    *args: str,
    timeout: float = 20,
    keys: dict[str, str] | None = None,
) -> SippResult:
    """Run ``sipp ARGS`` to completion; exit status 0 means every call followed the scenario."""
    errors = Path(tempfile.mkdtemp(prefix="sipp-")) / "errors.log"
    cmd = [sipp_binary(), "-nostdin", "-i", "127.0.0.1", *args]
    cmd += ["-trace_err", "-error_file", str(errors)]
    for k, v in (keys or {}).items():
        cmd += ["-key", k, v]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return SippResult(-1, out.decode(errors="replace"))
    text = out.decode(errors="replace")
    if proc.returncode and errors.exists():
        text += "\n--- SIPp errors ---\n" + errors.read_text(errors="replace")[-3000:]
    shutil.rmtree(errors.parent, ignore_errors=True)
    return SippResult(proc.returncode or 0, text)


def scenario(tmp: Path, template: str, **fields: str) -> str:
    """Fill a ``data/*.xml.in`` template (SIPp takes no keys in attributes) into ``tmp``."""
    from string import Template

    text = Template((DATA / template).read_text()).substitute(fields)
    out = tmp / template.removesuffix(".in")
    out.write_text(text)
    return str(out)


class SippServer:
    """A SIPp UAS running in the background (the trunk for outbound calls)."""

    def __init__(
        self,
        scenario: str,
        *,
        keys: dict[str, str] | None = None,
        calls: int = 1,
        extra: tuple[str, ...] = (),
    ):
        self.extra = extra
        self.port = free_port(udp=True, tcp=False)
        self.scenario = scenario
        self.keys = keys or {}
        self.calls = calls
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> SippServer:
        scen = ["-sn", self.scenario] if "." not in self.scenario else ["-sf", self.scenario]
        cmd = [sipp_binary(), "-nostdin", "-i", "127.0.0.1", "-p", str(self.port), *scen]
        cmd += ["-m", str(self.calls), *self.extra]
        self.errors = Path(tempfile.mkdtemp(prefix="sipp-")) / "errors.log"
        cmd += ["-trace_err", "-error_file", str(self.errors)]
        for k, v in self.keys.items():
            cmd += ["-key", k, v]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        await asyncio.sleep(0.2)
        return self

    async def wait(self, timeout: float = 20) -> SippResult:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            out, _ = await self.proc.communicate()
        text = out.decode(errors="replace")
        if self.proc.returncode and self.errors.exists():
            text += "\n--- SIPp errors ---\n" + self.errors.read_text(errors="replace")[-3000:]
        shutil.rmtree(self.errors.parent, ignore_errors=True)
        return SippResult(self.proc.returncode or 0, text)

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
