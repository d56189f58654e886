"""SIP over TCP and TLS for the gateway: Kamailio in front of its UDP port.

sippy carries SIP over UDP only. Rather than write a stream transport for it, the gateway can
put **Kamailio** (Debian ``kamailio``, ``kamailio-tls-modules``) in front: a stateful proxy
listening on TCP and TLS that record-routes every dialog (two Record-Route entries when the
transport changes, so in-dialog requests find their way back on the right transport) and
relays new requests to the gateway's UDP port. Requests the gateway sends toward phones are
loose-routed by the same proxy. Kamailio does all SIP parsing and transaction work on its side;
this module writes its configuration, starts it, and stops it.

One UDP worker (``children=1``): the gateway's provisional and final responses reach
Kamailio over UDP, and two workers could forward a 180 after its 200 to the TCP/TLS side.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from dsip.errors import ConfigError
from dsip.services.ports import free_port

__all__ = ["KamailioFront"]

_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")

_CONFIG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
tcp_children=2
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{host}:{udp}
listen=tcp:{host}:{tcp}
listen=tls:{host}:{tls}
enable_tls=yes
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "tls.so"
loadmodule "corex.so"
modparam("tls", "config", "{tls_cfg}")
modparam("rr", "enable_double_rr", 1)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && !t_check_trans()) {{
            if ($pr != "udp") {{
                $du = "sip:{host}:{gateway};transport=udp";
                force_send_socket(udp:{host}:{udp});
                forward();
            }}
            exit;
        }}
        if ($pr != "udp") {{  # a phone without a route set: its dialog is with the gateway
            $du = "sip:{host}:{gateway};transport=udp";
            force_send_socket(udp:{host}:{udp});
            t_relay();
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    record_route();
    if ($pr == "udp") {{  # from the gateway toward a phone: to the Request-URI as it is
        t_relay();
        exit;
    }}
    $du = "sip:{host}:{gateway};transport=udp";
    force_send_socket(udp:{host}:{udp});
    t_relay();
}}
"""

_TLS = """[server:default]
method = TLSv1.2+
certificate = {cert}
private_key = {key}
verify_certificate = no
require_certificate = no

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
"""


@dataclass
class KamailioFront:
    """Kamailio on ``host`` (TCP ``tcp_port``, TLS ``tls_port``) relaying to the gateway's
    UDP port. ``cert``/``key``: the TLS server certificate (PEM files)."""

    workdir: Path
    gateway_port: int
    cert: Path
    key: Path
    host: str = "127.0.0.1"
    tcp_port: int = 0
    tls_port: int = 0
    udp_port: int = 0

    def __post_init__(self) -> None:
        self.tcp_port = self.tcp_port or free_port(host=self.host)
        self.tls_port = self.tls_port or free_port(host=self.host)
        self.udp_port = self.udp_port or free_port(host=self.host, tcp=False, udp=True)
        self._proc: asyncio.subprocess.Process | None = None

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        tls_cfg = self.workdir / "tls.cfg"
        tls_cfg.write_text(_TLS.format(cert=self.cert, key=self.key))
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(
            _CONFIG.format(
                host=self.host,
                udp=self.udp_port,
                tcp=self.tcp_port,
                tls=self.tls_port,
                gateway=self.gateway_port,
                modules=_MODULES,
                tls_cfg=tls_cfg,
            )
        )
        return cfg

    async def start(self, timeout: float = 15) -> None:
        binary = shutil.which("kamailio") or (
            "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
        )
        if binary is None:
            raise ConfigError("kamailio is not installed (Debian kamailio, kamailio-tls-modules)")
        cfg = self._write_config()
        pid = self.workdir / "kamailio.pid"
        self.log = self.workdir / "kamailio.log"
        with self.log.open("wb") as log:  # a file, not a pipe nobody drains
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "-f", str(cfg), "-DD", "-E", "-P", str(pid),
                "-Y", str(self.workdir), "-w", str(self.workdir),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self._listening):
            if self._proc.returncode is not None:
                err = self.log.read_text(errors="replace")[-800:]
                raise ConfigError(f"kamailio exited: {err}")
            if time.monotonic() > deadline:
                raise ConfigError("kamailio did not start listening")
            await asyncio.sleep(0.1)

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.tls_port), timeout=0.5):
                return True
        except OSError:
            return False

    async def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
