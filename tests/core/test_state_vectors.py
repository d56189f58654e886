"""The shared ``state`` conformance vectors (§12, §13.2–§13.3, §19.4) against the engines.

Each vector file is one case. ``endpoint`` and ``relay`` components must pass;
``authority``/``subscriber`` are reported as skips with the reason, never as passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsip.conformance_state import StateSkip, run_state

STATE_VECTORS = (
    Path(__file__).resolve().parents[2].parent / "shared/reference/dsip-v0.7/vectors/state"
)

if not STATE_VECTORS.is_dir():
    pytest.skip(
        f"shared state vectors not found at {STATE_VECTORS} (clone ../shared beside the repo)",
        allow_module_level=True,
    )

CASES = sorted(STATE_VECTORS.glob("*.json"))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_state_vector(path: Path) -> None:
    vector: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    try:
        problems = run_state(vector["context"], vector["input"])
    except StateSkip as why:
        pytest.skip(str(why))
    assert problems == [], "\n".join(problems)


def test_endpoint_and_relay_vectors_all_run() -> None:
    """The components this issue owns are never skipped."""
    owned = [
        p
        for p in CASES
        if json.loads(p.read_text(encoding="utf-8"))["context"]["component"]
        in {"endpoint", "relay"}
    ]
    assert len(owned) >= 57
