"""Notes: a small web app where each person signs up and keeps their own notes."""

__version__ = "1.0.0"
