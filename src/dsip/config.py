"""Service configuration: one frozen dataclass per service, loaded from TOML, validated.

A configuration error refuses to start the service (``ConfigError``) rather than fall back
to a default: a relay that silently ignored a mistyped rate limit would be worse than one
that does not start.

Example ``relay.toml``::

    [relay]
    host = "127.0.0.1"
    ws_port = 8443
    quic_port = 8444            # omit to disable QUIC
    tls_cert = "relay.crt"      # PEM chain; omit both for plain ws behind a TLS proxy
    tls_key = "relay.key"
    store = "sqlite:///var/lib/dsip/relay.db"
    identity_seed_file = "relay.seed"   # 32 raw bytes, mode 0600; omitted -> ephemeral did:key
    did = "did:web:relay.example.com"   # optional: the relay's published did:web
    offline_retention_s = 86400
    hello_timeout_s = 10
    envelopes_per_minute = 600  # per DID
    invites_per_minute = 60     # per DID
    ip_envelopes_per_minute = 3000
    send_queue = 256            # per connection, frames
    quota_envelopes = 1000      # per recipient
    quota_bytes = 16777216
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from dsip.errors import ConfigError

__all__ = ["RelayConfig", "load_relay_config"]


@dataclass(frozen=True)
class RelayConfig:
    host: str = "127.0.0.1"
    ws_port: int = 8443
    quic_port: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    store: str = "sqlite:///dsip-relay.db"
    identity_seed_file: str | None = None
    did: str | None = None
    offline_retention_s: int = 86_400
    hello_timeout_s: float = 10.0
    envelopes_per_minute: int = 600
    invites_per_minute: int = 60
    ip_envelopes_per_minute: int = 3000
    send_queue: int = 256
    quota_envelopes: int = 1000
    quota_bytes: int = 16 * 1024 * 1024

    def validate(self) -> RelayConfig:
        def positive(name: str, value: float) -> None:
            if not value > 0:
                raise ConfigError(f"relay.{name} must be > 0, got {value!r}")

        for port_name in ("ws_port", "quic_port"):
            port = getattr(self, port_name)
            if port is not None and not 0 <= port < 65536:
                raise ConfigError(f"relay.{port_name} must be a TCP/UDP port, got {port!r}")
        for name in (
            "offline_retention_s",
            "hello_timeout_s",
            "envelopes_per_minute",
            "invites_per_minute",
            "ip_envelopes_per_minute",
            "send_queue",
            "quota_envelopes",
            "quota_bytes",
        ):
            positive(name, getattr(self, name))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("relay.tls_cert and relay.tls_key go together")
        if self.quic_port is not None and self.tls_cert is None:
            raise ConfigError("QUIC always needs TLS: set relay.tls_cert and relay.tls_key")
        return self

    def with_overrides(self, **changes: Any) -> RelayConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None}).validate()


def read_toml_table(path: Path, table: str) -> dict[str, Any]:
    """The ``[table]`` of the TOML file at ``path``; a ``ConfigError`` for anything amiss."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    section = data.get(table)
    if not isinstance(section, dict):
        raise ConfigError(f"{path} has no [{table}] table")
    return section


def load_relay_config(path: Path | None) -> RelayConfig:
    """Read ``[relay]`` from a TOML file (or defaults when ``path`` is None)."""
    if path is None:
        return RelayConfig().validate()
    section = read_toml_table(path, "relay")
    known = {f.name: f for f in fields(RelayConfig)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown relay settings {unknown}")
    values: dict[str, Any] = {}
    for name, value in section.items():
        expected = known[name].type
        ok = _type_ok(str(expected), value)
        if not ok:
            raise ConfigError(f"{path}: relay.{name} has the wrong type ({type(value).__name__})")
        values[name] = value
    return RelayConfig(**values).validate()


def _type_ok(annotation: str, value: object) -> bool:
    if value is None:
        return "None" in annotation
    if isinstance(value, bool):
        return "bool" in annotation
    if isinstance(value, int):
        return "int" in annotation or "float" in annotation
    if isinstance(value, float):
        return "float" in annotation
    if isinstance(value, str):
        return "str" in annotation
    return False
