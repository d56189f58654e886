"""DSIP v0.7 payloads: JSON Schemas (package data in ``schemas/``) and stage-13 validation."""

from __future__ import annotations

from dsip.core.payloads.schema import (
    MESSAGE_TYPES,
    SCHEMA_NAMES,
    schema_document,
    validate_named,
    validate_payload,
)

__all__ = [
    "MESSAGE_TYPES",
    "SCHEMA_NAMES",
    "schema_document",
    "validate_named",
    "validate_payload",
]
