"""baresip (Debian ``baresip-core``) as a real SIP softphone in tests, loopback only.

The phone sends a sine tone (``ausine`` module), plays what it receives into ALSA's ``null``
device, and the ``sndfile`` module keeps a WAV copy of the decoded received audio, which the
test analyses. It auto-answers incoming calls; ``-e /dial URI`` places one.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from dsip.media.tone import dominant_frequency
from dsip.services.ports import free_port

_CONFIG = """\
poll_method		epoll
net_interface		127.0.0.1
sip_listen		127.0.0.1:{port}
audio_player		alsa,null
audio_alert		alsa,null
audio_source		ausine,{tone}
ausrc_srate		48000
ausrc_channels		2
module_path		/usr/lib/baresip/modules
module			g711.so
module			ausine.so
module			alsa.so
module			sndfile.so
module			menu.so
module			account.so
snd_path		{snd}
"""


class Baresip:
    """One baresip process with its own config directory under ``workdir``."""

    def __init__(self, workdir: Path, *, tone: int, extra_config: str = "") -> None:
        if shutil.which("baresip") is None:
            pytest.skip("baresip not installed (Debian package baresip-core)")
        self.port = free_port(udp=True, tcp=True)
        self.cfg = workdir / "baresip"
        self.snd = workdir / "baresip-snd"
        self.cfg.mkdir(parents=True, exist_ok=True)
        self.snd.mkdir(parents=True, exist_ok=True)
        config = _CONFIG.format(port=self.port, tone=tone, snd=self.snd) + extra_config
        (self.cfg / "config").write_text(config)
        (self.cfg / "accounts").write_text(
            "<sip:phone@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU\n"
        )
        (self.cfg / "contacts").write_text("")
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.output = ""

    async def start(self, *commands: str, seconds: int = 10) -> None:
        args = ["-f", str(self.cfg), "-t", str(seconds)]
        for command in commands:
            args += ["-e", command]
        # stdbuf: baresip's stdio would hold its lines back in a pipe buffer
        self.proc = await asyncio.create_subprocess_exec(
            "stdbuf",
            "-o0",
            "baresip",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while chunk := await self.proc.stdout.read(4096):
            self.output += chunk.decode(errors="replace")

    async def wait_for_text(self, *texts: str, timeout: float = 10) -> str:
        """Wait until the phone has printed one of ``texts``; all it printed so far."""
        async with asyncio.timeout(timeout):
            while not any(t in self.output for t in texts):
                await asyncio.sleep(0.05)
        return self.output

    async def wait(self, timeout: float = 20) -> str:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            await self.proc.wait()
            await self._reader
        return self.output

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    def heard(self) -> float:
        """The dominant frequency of what the phone received (its decoded-audio dump)."""
        dumps = sorted(self.snd.glob("dump-*-dec.wav"))
        if not dumps:
            return 0.0
        with wave.open(str(dumps[-1])) as w:
            rate, channels = w.getframerate(), w.getnchannels()
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        if channels > 1:
            samples = samples[::channels]
        tail = samples[-rate:]  # the last second
        return dominant_frequency(tail.astype(np.float32), rate) if len(tail) else 0.0
