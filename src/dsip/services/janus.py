"""Janus (``janus`` Debian package) as dsip's SFU: process manager, Admin API, usage reader.

**Configuration.** ``Janus`` writes a minimal configuration set into its work directory and
starts ``janus -C <dir>/janus.jcfg -F <dir>``; nothing under ``/etc/janus`` is read:

* ``plugins/`` and ``transports/`` hold symlinks to ``libjanus_videoroom.so`` and
  ``libjanus_http.so`` only, so no other plugin or transport can load (the Debian package
  ships a dozen of each, several with network side effects).
* ``janus.jcfg`` — ``token_auth = true`` with *stored* tokens: every Janus API request must
  carry a token that was added through the Admin API (``add_token``), scoped to
  ``janus.plugin.videoroom``; the SFU join service (``dsip.services.sfu``) mints one per
  admitted participant. ``admin_secret`` is random per instance. ``media``: IPv4 only, a
  small RTP port range. ``nat``: ``ice_enforce_list`` names exactly one address, mDNS off.
* ``janus.transport.http.jcfg`` — Janus API and Admin API on ``127.0.0.1`` only, the Admin
  API additionally behind ``admin_acl = "127.0.0.1"``.
* ``janus.plugin.videoroom.jcfg`` — no static rooms, a random ``admin_key`` (only its
  holder, the join service, can create rooms), ``lock_rtp_forward`` (nobody else can
  forward a room's RTP elsewhere), ``string_ids`` (room ids are dsip room names).

**Why tests run Janus in a network namespace.** Janus never gathers ICE candidates on a
loopback interface: ``ice.c`` skips ``IFF_LOOPBACK`` interfaces when it lists local
addresses, and when that leaves nothing libnice falls back to *every* interface of the
host. So ``ice_enforce_list = "lo"`` cannot work; an SFU on 127.0.0.1 is impossible with
the packaged Janus. ``IsolatedNetwork`` creates a namespace holding ``lo`` and a veth pair
whose both ends live inside it (10.77.0.1/30 ↔ 10.77.0.2/30): a link that reaches nothing
outside. Janus runs there (``ip netns exec``) and gathers on 10.77.0.1 only; the test's
aiortc clients run in a thread that entered the same namespace (``IsolatedNetwork.run``)
and gather on 127.0.0.1 only (``dsip.media.webrtc.loopback_only``) — 10.77.0.1 is a local
address there, so every packet stays on that namespace's loopback path.

**Usage.** ``participant_stats`` reads ``handle_info`` for every handle through the Admin
API: media bytes and packets in and out per handle, with the stored token the handle's
session was created with — the join service maps that token back to the admitted DID.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from dsip.errors import ConfigError, DsipError
from dsip.services.ports import free_port

__all__ = [
    "VIDEOROOM",
    "HandleUsage",
    "IsolatedNetwork",
    "Janus",
    "JanusAdmin",
    "JanusError",
    "participant_stats",
]

logger = logging.getLogger("dsip.janus")

VIDEOROOM = "janus.plugin.videoroom"
_LIBDIRS = (
    Path("/usr/lib/x86_64-linux-gnu/janus"),
    Path("/usr/lib/aarch64-linux-gnu/janus"),
    Path("/usr/lib/janus"),
    Path("/opt/janus/lib/janus"),
)
_CLONE_NEWNET = 0x40000000
# Janus refuses to write recordings/pcaps into these (its default list, shortened).
_PROTECTED_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/proc", "/sbin", "/sys", "/usr", "/var")
T = TypeVar("T")


class JanusError(DsipError):
    """Janus answered ``error`` (or not at all); ``janus_code`` is Janus' numeric code."""

    default_code = "janus-error"
    default_reason = "session.failed"
    default_remote = True

    def __init__(self, message: str, *, janus_code: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.janus_code = janus_code


def _tx() -> str:
    return secrets.token_hex(8)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the starting thread dies (PR_SET_PDEATHSIG).

    ``ip netns exec`` execs Janus in the same process, so the setting reaches Janus: a
    killed test run leaves no SFU behind.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _janus_libdir() -> Path:
    for d in _LIBDIRS:
        if (d / "plugins" / "libjanus_videoroom.so").exists():
            return d
    raise ConfigError("Janus plugins not found (Debian package 'janus'; `make test` installs it)")


# --- network namespace -------------------------------------------------------------------


class IsolatedNetwork:
    """A network namespace with ``lo`` and a veth pair inside it, reaching nothing outside.

    ``address`` (10.77.0.1 on ``dsip-sfu0``) is the interface Janus gathers on; the peer
    end 10.77.0.2 only exists so the link has carrier (Janus skips interfaces that are
    not ``IFF_RUNNING``). Needs root (``CAP_SYS_ADMIN``/``CAP_NET_ADMIN``).
    """

    interface = "dsip-sfu0"
    peer_interface = "dsip-sfu1"
    address = "10.77.0.1"
    peer_address = "10.77.0.2"

    def __init__(self, name: str | None = None) -> None:
        self.name = name or f"dsip-sfu-{os.getpid()}-{secrets.token_hex(3)}"
        self.created = False

    @staticmethod
    def available() -> str | None:
        """``None`` if namespaces can be made here, else why not (for ``pytest.skip``)."""
        if os.geteuid() != 0:
            return "creating a network namespace needs root"
        if shutil.which("ip") is None:
            return "iproute2 ('ip') is not installed"
        return None

    @property
    def exec_prefix(self) -> list[str]:
        return [shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.name]

    def _ip(self, *args: str) -> None:
        subprocess.run(  # noqa: S603 - the resolved iproute2 binary, our own arguments
            [shutil.which("ip") or "/usr/sbin/ip", *args],
            check=True,
            capture_output=True,
            timeout=10,
        )

    @staticmethod
    def remove_stale() -> None:
        """Delete ``dsip-sfu-<pid>-*`` namespaces whose creating process is gone."""
        for path in Path("/run/netns").glob("dsip-sfu-*-*"):
            pid = path.name.split("-")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(subprocess.CalledProcessError, OSError):
                    subprocess.run(  # noqa: S603 - the resolved iproute2 binary
                        [shutil.which("ip") or "/usr/sbin/ip", "netns", "del", path.name],
                        check=True,
                        capture_output=True,
                        timeout=10,
                    )

    def create(self) -> IsolatedNetwork:
        why = self.available()
        if why is not None:
            raise ConfigError(why)
        self.remove_stale()
        try:
            self._ip("netns", "add", self.name)
            self.created = True
            ns = ("-n", self.name)
            self._ip(*ns, "link", "set", "lo", "up")
            self._ip(
                *ns, "link", "add", self.interface, "type", "veth", "peer", "name",
                self.peer_interface,
            )  # fmt: skip
            for dev in (self.interface, self.peer_interface):
                # No IPv6 at all: Janus would otherwise see link-local addresses.
                with contextlib.suppress(subprocess.CalledProcessError):
                    self._ip(
                        *ns, "link", "set", dev, "addrgenmode", "none"
                    )  # fmt: skip
            self._ip(*ns, "addr", "add", f"{self.address}/30", "dev", self.interface)
            self._ip(*ns, "addr", "add", f"{self.peer_address}/30", "dev", self.peer_interface)
            for dev in (self.interface, self.peer_interface):
                self._ip(*ns, "link", "set", dev, "up")
            self.run_sync(self._allow_loopback_replies, timeout=10)
        except subprocess.CalledProcessError as exc:
            self.delete()
            raise ConfigError(
                f"cannot set up network namespace {self.name}: {exc.stderr.decode(errors='replace')}"
            ) from None
        return self

    def _allow_loopback_replies(self) -> None:
        """libnice sends out of the interface it gathered on, even to 127.0.0.1 (IP_PKTINFO).

        Such a reply leaves ``dsip-sfu0`` and arrives on ``dsip-sfu1`` with a loopback
        destination and a local source, which the kernel drops as martian unless that
        interface accepts both (``route_localnet``, ``accept_local``; no ``rp_filter``).
        """
        for dev in ("all", self.interface, self.peer_interface):
            for key, value in (("route_localnet", "1"), ("accept_local", "1"), ("rp_filter", "0")):
                Path(f"/proc/sys/net/ipv4/conf/{dev}/{key}").write_text(value)

    def delete(self) -> None:
        if self.created:
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._ip("netns", "del", self.name)
            self.created = False

    def _enter(self) -> None:
        """Move the *calling thread* into the namespace (network namespaces are per task)."""
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({self.name}): {os.strerror(err)}")
        finally:
            os.close(fd)

    def run_sync(self, fn: Callable[[], T], *, timeout: float | None = None) -> T:
        """Run ``fn`` in a fresh thread inside the namespace; its sockets live there."""
        result: list[T] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                self._enter()
                result.append(fn())
            except BaseException as exc:  # handed to the caller's thread
                error.append(exc)

        thread = threading.Thread(target=target, name=f"netns:{self.name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"work inside {self.name} did not finish in {timeout} s")
        if error:
            raise error[0]
        return result[0]

    async def run(self, factory: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Run the coroutine ``factory()`` on its own event loop in a thread in the namespace."""

        async def main() -> T:
            return await factory()

        return await asyncio.to_thread(self.run_sync, lambda: asyncio.run(main()), timeout=timeout)

    def __enter__(self) -> IsolatedNetwork:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()


# --- the Janus process -------------------------------------------------------------------


def _jcfg(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """libconfig text for ``{section: {key: value}}`` (strings, ints, bools, string lists)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            if not v.isascii() or any(c in v for c in "\n\r"):
                raise ConfigError(f"jcfg strings must be one line of ASCII: {v[:60]!r}")
            return json.dumps(v)  # ASCII JSON string escapes are valid libconfig escapes
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to a jcfg file")

    out = []
    for name, body in sections.items():
        out.append(f"{name}: {{")
        out.extend(f"\t{k} = {value(v)}" for k, v in body.items())
        out.append("}")
    return "\n".join(out) + "\n"


class Janus:
    """A ``janus`` process with VideoRoom, HTTP Janus/Admin API on 127.0.0.1, stored tokens.

    With ``network`` it runs inside that ``IsolatedNetwork`` and gathers ICE on its veth
    address; without, ``ice_address`` (an interface name or address prefix) is required —
    we refuse to let Janus pick interfaces itself.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        network: IsolatedNetwork | None = None,
        ice_address: str | None = None,
        http_port: int | None = None,
        admin_port: int | None = None,
        rtp_ports: tuple[int, int] = (20000, 20199),
        admin_secret: str | None = None,
        room_admin_key: str | None = None,
        session_timeout: int = 60,
        debug_level: int = 4,
    ) -> None:
        if network is None and not ice_address:
            raise ConfigError("Janus needs an IsolatedNetwork or an explicit ice_address")
        self.workdir = workdir
        self.network = network
        self.ice_address = network.address if network is not None else str(ice_address)
        # A fresh namespace has every port free; on the host we look for free ones.
        self.http_port = http_port or (8088 if network else free_port())
        self.admin_port = admin_port or (7088 if network else free_port())
        self.rtp_ports = rtp_ports
        self.admin_secret = admin_secret or secrets.token_urlsafe(24)
        self.room_admin_key = room_admin_key or secrets.token_urlsafe(24)
        self.session_timeout = session_timeout
        self.debug_level = debug_level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Janus API base (``POST`` create, ``/{session}``, ``/{session}/{handle}``)."""
        return f"http://127.0.0.1:{self.http_port}/janus"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/admin"

    @property
    def log_path(self) -> Path:
        return self.workdir / "janus.log"

    def admin(self, *, timeout: float = 5.0) -> JanusAdmin:
        """An Admin API client (use it where this Janus is reachable: inside ``network``)."""
        return JanusAdmin(self.admin_url, self.admin_secret, timeout=timeout)

    def write_config(self) -> Path:
        libdir = _janus_libdir()
        wd = self.workdir
        for sub, lib in (
            ("plugins", "libjanus_videoroom.so"),
            ("transports", "libjanus_http.so"),
        ):
            (wd / sub).mkdir(parents=True, exist_ok=True)
            link = wd / sub / lib
            if not link.exists():
                link.symlink_to(libdir / sub / lib)
        for sub in ("events", "loggers"):
            (wd / sub).mkdir(parents=True, exist_ok=True)
        main = wd / "janus.jcfg"
        main.write_text(
            _jcfg(
                {
                    "general": {
                        "configs_folder": str(wd),
                        "plugins_folder": str(wd / "plugins"),
                        "transports_folder": str(wd / "transports"),
                        "events_folder": str(wd / "events"),
                        "loggers_folder": str(wd / "loggers"),
                        "debug_level": self.debug_level,
                        "debug_colors": False,
                        "log_to_stdout": False,
                        "log_to_file": str(self.log_path),
                        "interface": self.ice_address,
                        "server_name": "dsip-sfu",
                        "session_timeout": self.session_timeout,
                        "token_auth": True,
                        "admin_secret": self.admin_secret,
                        "protected_folders": list(_PROTECTED_FOLDERS),
                    },
                    "media": {
                        "ipv6": False,
                        "rtp_port_range": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
                    },
                    "nat": {
                        "nice_debug": self.debug_level >= 7,
                        "ice_enforce_list": self.ice_address,
                        "ignore_mdns": True,
                    },
                    "plugins": {},
                    "transports": {},
                    "events": {"broadcast": False},
                }
            )
        )
        (wd / "janus.transport.http.jcfg").write_text(
            _jcfg(
                {
                    "general": {
                        "json": "compact",
                        "base_path": "/janus",
                        "http": True,
                        "port": self.http_port,
                        "ip": "127.0.0.1",
                        "https": False,
                    },
                    "admin": {
                        "admin_base_path": "/admin",
                        "admin_http": True,
                        "admin_port": self.admin_port,
                        "admin_ip": "127.0.0.1",
                        "admin_https": False,
                        "admin_acl": "127.0.0.1",
                    },
                }
            )
        )
        (wd / "janus.plugin.videoroom.jcfg").write_text(
            _jcfg(
                {
                    "general": {
                        "admin_key": self.room_admin_key,
                        "lock_rtp_forward": True,
                        "string_ids": True,
                    }
                }
            )
        )
        for f in wd.glob("*.jcfg"):
            f.chmod(0o600)
        return main

    def start(self, timeout: float = 15.0) -> Janus:
        binary = shutil.which("janus")
        if binary is None:
            raise ConfigError("Janus is not installed (Debian package 'janus'; `make test` does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        main = self.write_config()
        cmd = [binary, "-C", str(main), "-F", str(self.workdir)]
        if self.network is not None:
            cmd = [*self.network.exec_prefix, *cmd]
        # glib/libnice write their own diagnostics to stderr, not to Janus' log file.
        with (self.workdir / "janus.stderr").open("wb") as err:
            self.proc = subprocess.Popen(  # noqa: S603 - our own config, fixed binary
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # only a prctl before exec
            )
        try:
            if self.network is not None:
                self.network.run_sync(lambda: self._wait_ready(timeout), timeout=timeout + 5)
            else:
                self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ConfigError(f"janus exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/info", timeout=1) as resp:  # noqa: S310
                    info = json.loads(resp.read())
                if info.get("janus") == "server_info" and VIDEOROOM in info.get("plugins", {}):
                    return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.1)
        raise ConfigError(f"janus did not answer /janus/info in {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- Admin API ---------------------------------------------------------------------------


class JanusAdmin:
    """The Janus Admin API over HTTP (``admin_secret`` in every request)."""

    def __init__(self, url: str, secret: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._secret = secret
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> JanusAdmin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(self, verb: str, path: str = "", **fields: Any) -> dict[str, Any]:
        body = {"janus": verb, "transaction": _tx(), "admin_secret": self._secret, **fields}
        try:
            resp = await self._http.post(self.url + path, json=body)
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise JanusError(f"Janus Admin API {verb}: {exc}", remote=False) from None
        if not isinstance(data, dict):
            raise JanusError(f"Janus Admin API {verb}: answer is not an object")
        if data.get("janus") == "error":
            err = data.get("error") or {}
            raise JanusError(
                f"Janus Admin API {verb}: {err.get('reason')}", janus_code=err.get("code")
            )
        return data

    async def add_token(self, token: str, plugins: Sequence[str] = (VIDEOROOM,)) -> None:
        await self.request("add_token", token=token, plugins=list(plugins))

    async def remove_token(self, token: str) -> None:
        await self.request("remove_token", token=token)

    async def list_tokens(self) -> list[str]:
        data = await self.request("list_tokens")
        return [str(t.get("token")) for t in data.get("data", {}).get("tokens", [])]

    async def message_plugin(self, plugin: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """A synchronous plugin request; raises ``JanusError`` on a plugin-level error too."""
        data = await self.request("message_plugin", plugin=plugin, request=dict(request))
        response = data.get("response")
        if not isinstance(response, dict):
            raise JanusError(f"{plugin} answered without a response")
        if "error_code" in response or "error" in response:
            raise JanusError(
                f"{plugin}: {response.get('error')}", janus_code=response.get("error_code")
            )
        return response

    async def list_sessions(self) -> list[int]:
        data = await self.request("list_sessions")
        return [int(s) for s in data.get("sessions", [])]

    async def list_handles(self, session_id: int) -> list[int]:
        data = await self.request("list_handles", f"/{session_id}")
        return [int(h) for h in data.get("handles", [])]

    async def handle_info(self, session_id: int, handle_id: int) -> dict[str, Any]:
        data = await self.request("handle_info", f"/{session_id}/{handle_id}")
        info = data.get("info")
        return info if isinstance(info, dict) else {}


# --- usage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HandleUsage:
    """Media counters of one Janus handle (one PeerConnection) as the Admin API reports them.

    ``bytes_in`` is what Janus received from the participant (its published media),
    ``bytes_out`` what Janus sent to it (the feeds it subscribed to).
    """

    session_id: int
    handle_id: int
    token: str | None
    opaque_id: str | None
    room: str | None
    role: str | None  # "publisher" | "subscriber" | None (not joined)
    participant: str | None
    bytes_in: int
    bytes_out: int
    packets_in: int
    packets_out: int


def _int(v: Any) -> int:
    return max(v, 0) if isinstance(v, int) and not isinstance(v, bool) else 0


def _obj(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _usage_of(session_id: int, handle_id: int, info: Mapping[str, Any]) -> HandleUsage:
    plugin = _obj(info.get("plugin_specific"))
    totals = {"bi": 0, "bo": 0, "pi": 0, "po": 0}
    # Janus 1.x: webrtc.media is {mindex: {..., "stats": {"in": {...}, "out": {...}}}}.
    for medium in _obj(_obj(info.get("webrtc")).get("media")).values():
        stats = _obj(_obj(medium).get("stats"))
        s_in, s_out = _obj(stats.get("in")), _obj(stats.get("out"))
        totals["bi"] += _int(s_in.get("bytes"))
        totals["bo"] += _int(s_out.get("bytes"))
        totals["pi"] += _int(s_in.get("packets"))
        totals["po"] += _int(s_out.get("packets"))
    room, pid = plugin.get("room"), plugin.get("id")
    token, opaque = info.get("token"), info.get("opaque_id")
    return HandleUsage(
        session_id=session_id,
        handle_id=handle_id,
        token=str(token) if token is not None else None,
        opaque_id=str(opaque) if opaque is not None else None,
        room=str(room) if room is not None else None,
        role=str(plugin["type"]) if isinstance(plugin.get("type"), str) else None,
        participant=str(pid) if pid is not None else None,
        bytes_in=totals["bi"],
        bytes_out=totals["bo"],
        packets_in=totals["pi"],
        packets_out=totals["po"],
    )


async def participant_stats(
    admin: JanusAdmin, *, room: str | None = None, tokens: Iterable[str] | None = None
) -> list[HandleUsage]:
    """Per-handle media usage from ``handle_info``, optionally only one room or some tokens.

    Handles that vanish between listing and reading (a participant leaving) are skipped.
    """
    wanted = set(tokens) if tokens is not None else None
    out: list[HandleUsage] = []
    for session_id in await admin.list_sessions():
        try:
            handles = await admin.list_handles(session_id)
        except JanusError:
            continue
        for handle_id in handles:
            try:
                info = await admin.handle_info(session_id, handle_id)
            except JanusError:
                continue
            usage = _usage_of(session_id, handle_id, info)
            if room is not None and usage.room != room:
                continue
            if wanted is not None and usage.token not in wanted:
                continue
            out.append(usage)
    return out
