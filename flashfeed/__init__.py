"""flashfeed: personalised flash-sale shop windows (shared library, CLI, read API)."""
