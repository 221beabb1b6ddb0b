"""Signing Android apps on the host, after the sandboxed build produced an unsigned, zipaligned APK.

The signing key never enters a sandbox: the build's commands cannot read it, print it or sign
something else with it. `apksigner` here only reads the (untrusted) APK and writes a signed copy; it
runs nothing from it. Two kinds of key:

- a company key: a keystore the admin provides (ANDROID_SIGNING_KEYSTORE and its passwords, see
  store/settings.py), so prototypes install as updates over builds the company signed the same way;
- a per-store debug key, made with the JDK's `keytool` on first use and kept beside the store's data,
  so every prototype from one store carries the same signature and a newer version installs over an
  older one.

Passwords reach keytool and apksigner through environment variables named on their command line
(`env:NAME`), never through argv, which other local users can read in /proc.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DEBUG_ALIAS = "prototype-store-debug"
DEBUG_KEYSTORE = "debug.p12"
DEBUG_PASSWORD_FILE = "debug.password"
TIMEOUT = 120  # seconds for one keytool or apksigner run (a JVM start is most of it)
# apksigner verify --print-certs -v: "Verified using v2 scheme (APK Signature Scheme v2): true" and
# "Signer #1 certificate SHA-256 digest: 3f…"
SCHEME_LINE = re.compile(r"^Verified using v(\d(?:\.\d)?) scheme .*: (true|false)$", re.M)
SIGNER_SHA256 = re.compile(r"^Signer #1 certificate SHA-256 digest: ([0-9a-f]{64})$", re.M)
SIGNER_DN = re.compile(r"^Signer #1 certificate DN: (.+)$", re.M)


class SigningError(RuntimeError):
    """The APK could not be signed or verified (the message says why; it never holds a password)."""


@dataclass(frozen=True)
class SigningKey:
    keystore: Path
    alias: str
    store_password: str = field(repr=False)
    key_password: str = field(default="", repr=False)  # "" means the keystore's password (PKCS12 keys)
    kind: str = "company"  # "company" or "debug": shown on the install page


def debug_key(folder: Path) -> SigningKey:
    """The store's own debug key in `folder`, made on first use. Several workers may ask at once: a lock
    makes sure one makes it and the others read that one, since two keys would give prototypes from the
    same store different signatures (and Android refuses to update an app across signatures)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    keystore, password_file = folder / DEBUG_KEYSTORE, folder / DEBUG_PASSWORD_FILE
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not keystore.exists():
            password = secrets.token_urlsafe(24)
            partial = folder / f".{DEBUG_KEYSTORE}.partial"
            partial.unlink(missing_ok=True)
            _run(
                ["keytool", "-genkeypair", "-keystore", str(partial), "-storetype", "PKCS12",
                 "-alias", DEBUG_ALIAS, "-keyalg", "RSA", "-keysize", "2048", "-validity", "10000",
                 "-dname", "CN=Prototype Store debug key, O=Prototype Store",
                 "-storepass:env", "STORE_PASSWORD", "-keypass:env", "STORE_PASSWORD", "-noprompt"],
                {"STORE_PASSWORD": password}, "could not make the store's debug key with keytool",
            )  # fmt: skip
            descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with open(descriptor, "w") as handle:
                handle.write(password)
            os.chmod(partial, 0o600)
            os.replace(partial, keystore)  # last, so a half-made key is never found as the key
    return SigningKey(keystore, DEBUG_ALIAS, password_file.read_text().strip(), kind="debug")


def sign_apk(apk: Path, key: SigningKey) -> None:
    """Sign `apk` in place with `key` (v1, v2 and v3 schemes, as apksigner chooses for the APK's
    minimum SDK). Signatures the build may have put there are replaced."""
    signed = apk.with_name(apk.name + ".signing")
    env = {"STORE_PASSWORD": key.store_password, "KEY_PASSWORD": key.key_password or key.store_password}
    try:
        _run(
            ["apksigner", "sign", "--ks", str(key.keystore), "--ks-key-alias", key.alias,
             "--ks-pass", "env:STORE_PASSWORD", "--key-pass", "env:KEY_PASSWORD",
             "--out", str(signed), str(apk)],
            env, "the app could not be signed",
        )  # fmt: skip
        os.replace(signed, apk)
    finally:
        signed.unlink(missing_ok=True)
        Path(str(signed) + ".idsig").unlink(missing_ok=True)  # apksigner writes one for v4 on some versions


def verify_apk(apk: Path) -> dict:
    """What `apksigner verify` says of `apk`: the schemes it verified and the signer's certificate
    (SHA-256 digest and name). Raises SigningError when the signature does not verify."""
    output = _run(["apksigner", "verify", "--print-certs", "-v", str(apk)], {}, "the app's signature does not verify")
    schemes = [f"v{number}" for number, ok in SCHEME_LINE.findall(output) if ok == "true"]
    digest, name = SIGNER_SHA256.search(output), SIGNER_DN.search(output)
    return {
        "signature_schemes": schemes,
        "signer_sha256": digest.group(1) if digest else "",
        "signer": name.group(1).strip() if name else "",
    }


def _run(argv: list[str], secret_env: dict[str, str], what: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **secret_env}
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise SigningError(f"{what}: '{argv[0]}' is not installed (see scripts/system-deps.sh)") from None
    except subprocess.TimeoutExpired:
        raise SigningError(f"{what}: '{argv[0]}' took longer than {TIMEOUT} s") from None
    output = (done.stdout + done.stderr).strip()
    for value in secret_env.values():
        output = output.replace(value, "***")
    if done.returncode != 0:
        raise SigningError(f"{what}: {output[-2000:] or f'{argv[0]} exited with {done.returncode}'}")
    return output
