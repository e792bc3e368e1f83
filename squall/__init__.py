"""Squall: a real-time chat server on Tornado whose web node never blocks."""

__version__ = "0.1.0"
