"""Sans-I/O protocol core: no sockets, no asyncio, no wall clock (``now`` is a parameter)."""
