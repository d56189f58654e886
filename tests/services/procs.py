"""Real relay processes for tests: ``python -m dsip relay`` with a local CA and a SQLite store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


class RelayProcess:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, object] = {}
        seed = workdir / "relay.seed"
        if not seed.exists():
            seed.write_bytes(os.urandom(32))
            seed.chmod(0o600)

    def start(self, *extra: str) -> None:
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dsip",
                "relay",
                "--ws-port",
                "0",
                "--local-ca",
                str(self.workdir / "tls"),
                "--store",
                f"sqlite:///{self.workdir}/relay.db",
                "--identity-seed-file",
                str(self.workdir / "relay.seed"),
                "--ready-file",
                str(ready),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"relay exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("relay did not become ready")
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    @property
    def uri(self) -> str:
        return f"wss://localhost:{self.info['ws_port']}/dsip"

    def ssl(self) -> object:
        import ssl

        return ssl.create_default_context(cafile=str(self.workdir / "tls" / "ca.pem"))

    def stored(self, recipient: str) -> int:
        db = sqlite3.connect(f"file:{self.workdir}/relay.db?mode=ro", uri=True, timeout=5)
        try:
            return int(
                db.execute(
                    "SELECT count(*) FROM envelopes WHERE recipient = ?", (recipient,)
                ).fetchone()[0]
            )
        finally:
            db.close()
