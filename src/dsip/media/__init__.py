"""Media plane (seed §7): WebRTC on aiortc bound to DSIP calls, tones for testing, TURN."""
