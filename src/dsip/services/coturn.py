"""coturn, started and stopped by dsip (tests, the local demo network), with TURN REST auth.

TURN REST credentials (draft-uberti-behave-turn-rest, what coturn's ``use-auth-secret``
implements): the username is ``<expiry unix time>:<DID>``, the password
``base64(HMAC-SHA1(shared secret, username))``. coturn recomputes the HMAC and refuses an
expired username, so a relay can hand short-lived credentials to the DIDs it authenticated
(bound with a verified hello) without coturn knowing anything about DIDs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dsip.errors import ConfigError
from dsip.services.ports import free_port

__all__ = ["Coturn", "CoturnCli", "TurnCredentials", "TurnSession", "turn_rest_credentials"]


@dataclass(frozen=True)
class TurnCredentials:
    uris: tuple[str, ...]
    username: str
    credential: str
    expires_at: int

    def as_capability(self) -> dict[str, object]:
        """The ``turn`` member of a relay hello's capabilities."""
        return {
            "uris": list(self.uris),
            "username": self.username,
            "credential": self.credential,
            "expires_at": self.expires_at,
        }


def turn_rest_credentials(
    secret: bytes, did: str, *, now: int, ttl: int, uris: tuple[str, ...]
) -> TurnCredentials:
    expires = now + ttl
    username = f"{expires}:{did}"
    digest = hmac.new(secret, username.encode("utf-8"), hashlib.sha1).digest()
    return TurnCredentials(uris, username, base64.b64encode(digest).decode("ascii"), expires)


class Coturn:
    """A ``turnserver`` process on 127.0.0.1 with ``use-auth-secret``."""

    def __init__(
        self,
        workdir: Path,
        *,
        secret: bytes | None = None,
        port: int | None = None,
        realm: str = "dsip.local",
    ) -> None:
        self.workdir = workdir
        self.secret = secret or os.urandom(32)
        self.port = port or free_port(udp=True)
        self.realm = realm
        self.proc: subprocess.Popen[bytes] | None = None
        self.cli_port = free_port()
        self.cli_password = os.urandom(12).hex()

    def cli(self) -> CoturnCli:
        return CoturnCli(self.cli_port, self.cli_password)

    @property
    def uri(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def credentials(self, did: str, *, ttl: int = 600, now: int | None = None) -> TurnCredentials:
        # coturn keys the HMAC with the static-auth-secret *text* from its configuration.
        return turn_rest_credentials(
            self.secret.hex().encode(),
            did,
            now=int(time.time()) if now is None else now,
            ttl=ttl,
            uris=(self.uri,),
        )

    def start(self, timeout: float = 10.0) -> Coturn:
        binary = shutil.which("turnserver")
        if binary is None:
            raise ConfigError(
                "coturn is not installed (Debian package 'coturn'; `make test` installs it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "turnserver.conf"
        relay_base = 40000 + (self.port % 1000) * 20
        conf.write_text(
            "\n".join(
                [
                    "listening-ip=127.0.0.1",
                    "relay-ip=127.0.0.1",
                    f"listening-port={self.port}",
                    f"min-port={relay_base}",
                    f"max-port={relay_base + 19}",
                    "use-auth-secret",
                    f"static-auth-secret={self.secret.hex()}",
                    f"realm={self.realm}",
                    "fingerprint",
                    "no-tls",
                    "no-dtls",
                    "no-tcp-relay",
                    "cli-ip=127.0.0.1",
                    f"cli-port={self.cli_port}",
                    f"cli-password={self.cli_password}",
                    "no-multicast-peers",
                    "allow-loopback-peers",
                    "stale-nonce=600",
                    f"pidfile={self.workdir / 'turnserver.pid'}",
                    f"userdb={self.workdir / 'turndb'}",
                    f"log-file={self.workdir / 'turnserver.log'}",
                    "simple-log",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        self.proc = subprocess.Popen(  # noqa: S603 - our own config, fixed binary
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        log = self.workdir / "turnserver.log"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"turnserver exited with {self.proc.returncode}; see {log}")
            if log.exists() and "Total General servers" in log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        raise ConfigError(f"turnserver did not start in {timeout} s; see {log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass(frozen=True)
class TurnSession:
    """One allocation as coturn's CLI reports it."""

    id: str
    username: str
    bytes: int  # received + sent, both directions, as counted by coturn


_SESSION = re.compile(r"id=(\d+), user <([^>]*)>:")
_USAGE = re.compile(r"usage: rp=\d+, rb=(\d+), sp=\d+, sb=(\d+)")


class CoturnCli:
    """coturn's telnet CLI on 127.0.0.1: list sessions with usage, cancel a session.

    This is coturn's own administrative interface (``cli-ip``/``cli-port``/``cli-password``);
    dsip reads usage and enforces metering through it rather than inferring from logs.
    """

    def __init__(self, port: int, password: str, *, timeout: float = 5.0) -> None:
        self.port = port
        self.password = password
        self.timeout = timeout

    async def _command(self, command: str) -> str:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                await reader.readuntil(b"password: ")
                writer.write(self.password.encode() + b"\r\n")
                await reader.readuntil(b"> ")
                writer.write(command.encode() + b"\r\n")
                out = await reader.readuntil(b"> ")
                writer.write(b"quit\r\n")
                return out.decode(errors="replace")
            finally:
                writer.close()

    async def sessions(self, user_part: str = "") -> list[TurnSession]:
        if any(c.isspace() for c in user_part):
            raise ValueError("user filter must not contain spaces")
        text = await self._command(f"psp {user_part}" if user_part else "ps")
        out = []
        blocks = _SESSION.split(text)
        # split gives [pre, id, user, body, id, user, body, ...]
        for i in range(1, len(blocks) - 2, 3):
            usage = _USAGE.search(blocks[i + 2])
            total = int(usage.group(1)) + int(usage.group(2)) if usage else 0
            out.append(TurnSession(blocks[i], blocks[i + 1], total))
        return out

    async def cancel(self, session_id: str) -> None:
        if not session_id.isdigit():
            raise ValueError("session id is numeric")
        await self._command(f"cs {session_id}")
