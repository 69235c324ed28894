"""The dialer: claims queued calls, places them within limits, records what happened."""
