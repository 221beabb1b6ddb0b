"""A small podcast backend: shows and episodes as JSON over HTTP."""

__version__ = "0.3.0"
