"""Signaling bindings (§13): ws/1.0 on ``websockets`` and quic/1.0 on ``aioquic``.

Every binding hands the layers above a ``FrameConnection``: one reliable, ordered, encrypted
channel carrying whole DSIP frames (a JOSE text frame or a COSE binary frame), never more
than ``MAX_FRAME_BYTES``. The relay and the agent are written against that protocol only.
"""

from dsip.transport.base import MAX_FRAME_BYTES, ConnectionClosed, FrameConnection

__all__ = ["MAX_FRAME_BYTES", "ConnectionClosed", "FrameConnection"]
