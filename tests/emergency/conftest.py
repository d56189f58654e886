"""Emergency test fixtures (defined in emfix)."""

from tests.emergency.emfix import _loopback, world  # noqa: F401 - fixtures
