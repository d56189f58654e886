"""What every aiohttp service of dsip shares: its bound port and its shutdown.

A service builds its ``web.Application``, sets ``self._runner`` (a started
``web.AppRunner``) in its own ``start`` and inherits the rest from :class:`RunnerService`.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["RunnerService"]


class RunnerService:
    _runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The TCP port the service is listening on (useful when it was started on port 0)."""
        assert self._runner is not None, "not started"
        for addr in self._runner.addresses:
            return int(addr[1])
        raise RuntimeError("not listening")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
