"""Password hashing with scrypt (standard library). Only the hash is stored, never the password."""

import hashlib
import hmac
import secrets

# scrypt's cost: 2**14 rounds, 16 MiB of memory and about 50 ms per check on a laptop. Slow enough
# that a stolen database is expensive to guess through, fast enough for a sign-in.
N, R, P = 2**14, 8, 1
LENGTH = 32


def _scrypt(password, salt, n, r, p):
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=LENGTH
    )


def hash_password(password):
    """Returns 'scrypt$n$r$p$salt$hash' (hex), a fresh random salt each time."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, N, R, P)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def check_password(password, stored):
    """True when `password` is the one `stored` was made from. A malformed hash is never a match."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    # Compare in constant time so the answer's timing says nothing about how close a guess was.
    return hmac.compare_digest(computed.hex(), digest)


# Checked against when a username does not exist, so that a wrong username takes as long as a
# wrong password and the timing does not tell which accounts exist.
DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
