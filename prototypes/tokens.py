"""Secret tokens stored only as their hash: share links (store/models.py) and build runners
(prototypes/runners.py). A token is shown once, when it is made; a leaked database then gives nobody a
link or a runner."""

from __future__ import annotations

import hashlib
import secrets


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)
