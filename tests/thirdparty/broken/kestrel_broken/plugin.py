"""Simulates a plugin whose native dependency is missing on this host."""

raise ImportError("kestrel_broken needs libacme.so.3, which is not installed")
