"""Durable store-and-forward storage for the relay (§13.3): SQLite by default, PostgreSQL too.

``await open_store(url)`` picks the backend from the URL:

* ``sqlite:///var/lib/dsip/relay.db`` (the URL's path, so absolute),
  ``sqlite:relay.db`` (relative) or a plain filesystem path → ``SqliteStore``;
* ``postgresql://user@host:5432/dbname`` (or ``postgres://``; any libpq URL, e.g.
  ``?options=-csearch_path%3Ddsip`` to keep the tables in their own schema)
  → ``PostgresStore``, which needs ``psycopg`` and ``psycopg-pool`` and is imported only
  when asked for.

Both implement ``EnvelopeStore`` (see ``dsip.storage.base`` for the shared semantics:
one transaction per call, idempotent put, per-recipient quota, silent expiry).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from dsip.storage.base import (
    EnvelopeStore,
    StoredEnvelope,
    StoreError,
    StoreLimits,
    StoreStats,
)
from dsip.storage.sqlite import SqliteStore

__all__ = [
    "EnvelopeStore",
    "SqliteStore",
    "StoreError",
    "StoreLimits",
    "StoreStats",
    "StoredEnvelope",
    "open_store",
    "sqlite_path",
]


def _config_error(message: str) -> StoreError:
    return StoreError(message, code="store-config", reason="x-dsip.config-invalid")


def sqlite_path(url: str | os.PathLike[str]) -> str:
    """The filesystem path a ``sqlite:`` URL (or a plain path) names."""
    text = os.fspath(url)
    if not text.startswith("sqlite:"):
        return text
    parts = urlsplit(text)
    if parts.netloc or parts.query or parts.fragment:
        raise _config_error(
            f"sqlite URL must be sqlite:///absolute/path or sqlite:relative: {text!r}"
        )
    path = unquote(parts.path)
    if path.startswith("//"):  # sqlite:////abs/path, SQLAlchemy's spelling of an absolute path
        path = "/" + path.lstrip("/")
    if not path:
        raise _config_error(f"sqlite URL names no file: {text!r}")
    return path


async def open_store(
    url: str | os.PathLike[str], *, limits: StoreLimits | None = None
) -> EnvelopeStore:
    """Open the store ``url`` names, creating and migrating its schema if needed."""
    text = os.fspath(url)
    scheme = text.split(":", 1)[0].lower() if ":" in text else ""
    if scheme in ("postgresql", "postgres"):
        try:
            from dsip.storage.postgres import PostgresStore
        except ImportError as exc:
            raise _config_error(
                f"PostgreSQL store needs psycopg: pip install 'psycopg[binary]' psycopg-pool ({exc})"
            ) from exc
        return await PostgresStore.open(text, limits=limits)
    if scheme in ("", "sqlite") or os.path.sep in text.split(":", 1)[0]:
        return await SqliteStore.open(sqlite_path(text), limits=limits)
    raise _config_error(f"unknown store URL scheme {scheme!r}: use sqlite:/// or postgresql://")
