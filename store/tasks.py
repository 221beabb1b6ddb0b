"""The store's periodic work (Celery beat, store/celery.py). Thin: the rules live in plain modules."""

from __future__ import annotations

from celery import shared_task

from store import counts


@shared_task(ignore_result=True)
def refresh_trending() -> int:
    """Take activity older than the trending window off the prototypes' scores (store/counts.py)."""
    return counts.refresh_trending()
