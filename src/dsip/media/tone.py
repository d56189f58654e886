"""Test signals for real media paths: a sine tone source and a tone detector.

Tests and the demo prove that audio *flowed* — through Opus, SRTP, ICE, maybe TURN — by
sending a known frequency and finding it at the far end with an FFT, rather than by
trusting connection state.
"""

from __future__ import annotations

import asyncio
import fractions
import time
import wave
from pathlib import Path

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

__all__ = ["SAMPLE_RATE", "ToneDetector", "ToneTrack", "dominant_frequency"]

SAMPLE_RATE = 48_000
PTIME = 0.020
SAMPLES = int(SAMPLE_RATE * PTIME)


class ToneTrack(MediaStreamTrack):
    """An audio track playing a continuous sine at ``frequency`` Hz, paced in real time."""

    kind = "audio"

    def __init__(self, frequency: float = 1000.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._t0: float | None = None
        self._pts = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            wait = self._t0 + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        n = np.arange(self._pts, self._pts + SAMPLES)
        pcm = (
            self.amplitude * 32767 * np.sin(2 * np.pi * self.frequency * n / SAMPLE_RATE)
        ).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += SAMPLES
        return frame


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    """The strongest frequency in ``samples`` (Hann window, real FFT)."""
    if samples.size < 256:
        return 0.0
    windowed = samples.astype(np.float64) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(windowed))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * sample_rate / samples.size)


class ToneDetector:
    """Consumes a received audio track; reports the dominant frequency of what arrived."""

    def __init__(self, track: MediaStreamTrack, *, keep_seconds: float = 1.0) -> None:
        self.track = track
        self.frames = 0
        self.sample_rate = SAMPLE_RATE
        self._keep = keep_seconds
        self._buf: list[np.ndarray] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                if not isinstance(frame, AudioFrame):
                    continue
                self.frames += 1
                self.sample_rate = int(frame.sample_rate)
                pcm = frame.to_ndarray()
                mono = (
                    pcm.reshape(-1, len(frame.layout.channels)).mean(axis=1)
                    if pcm.ndim > 1
                    else pcm
                )
                if frame.format.name in ("s16", "s16p"):
                    mono = mono.reshape(-1)
                self._buf.append(np.asarray(mono, dtype=np.float64).reshape(-1))
                total = sum(b.size for b in self._buf)
                while self._buf and total - self._buf[0].size > self._keep * self.sample_rate:
                    total -= self._buf.pop(0).size
        except (MediaStreamError, asyncio.CancelledError):
            return

    def frequency(self) -> float:
        if not self._buf:
            return 0.0
        return dominant_frequency(np.concatenate(self._buf), self.sample_rate)

    async def wait_for_tone(
        self, frequency: float, *, tolerance: float = 30.0, timeout: float = 10.0
    ) -> float:
        """Wait until the received audio's dominant frequency is ``frequency`` ± ``tolerance``."""
        deadline = time.monotonic() + timeout
        got = 0.0
        while time.monotonic() < deadline:
            if self.frames > 25:
                got = self.frequency()
                if abs(got - frequency) <= tolerance:
                    return got
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"no {frequency} Hz tone: dominant {got:.0f} Hz after {self.frames} frames"
        )

    def stop(self) -> None:
        self._task.cancel()


def write_tone_wav(path: Path, frequency: float = 1000.0, seconds: float = 10.0) -> Path:
    """A 48 kHz mono 16-bit WAV of a sine tone: what a browser's fake microphone plays in a
    loop (Chromium ``--use-file-for-fake-audio-capture``) so the far end can detect it."""
    rate = 48_000
    t = np.arange(int(rate * seconds)) / rate
    pcm = (0.4 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path
