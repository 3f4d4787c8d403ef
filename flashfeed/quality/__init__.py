"""Offline ranking metrics and the quality report of a served version."""
