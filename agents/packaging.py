"""Packaging a verified workspace into an artifact, and unpacking web bundles safely.

The workspace was written by untrusted commands, and the host reads it as a more privileged user:
links, devices and oversized trees are refused instead of followed, so a build cannot make the store
package a file from outside its workspace. Apps (.apk, .ipa) are checked to be installable and their
metadata (id, version, build number, minimum OS, name, icon) is read from the files themselves.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from agents.apksign import SigningError, SigningKey, sign_apk, verify_apk
from agents.appmeta import AAB_REFUSED, AppError, read_apk, read_ipa
from agents.errors import ServiceError, UserError
from agents.recipe import Recipe
from agents.spec import ArtifactFile

MAX_FILES = 20_000
MAX_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
MAX_DEPTH = 64  # folders in a web bundle
ZIP_DATE = (2020, 1, 1, 0, 0, 0)
CONTENT_TYPES = {
    "web": "application/zip",
    "pyz": "application/octet-stream",
    "wheel": "application/octet-stream",
    "archive": "application/octet-stream",
    "apk": "application/vnd.android.package-archive",
    "ipa": "application/octet-stream",
    "patch": "text/x-diff",
}


def refuse(detail: str):
    raise UserError("packaging_failed", detail)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _inside(tree: Path, relative: str) -> Path:
    """The artifact path in the tree, refusing links anywhere along it."""
    current = tree
    for part in PurePosixPath(relative).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            refuse(f"'{relative}' was not produced by the build")
        if stat.S_ISLNK(mode):
            refuse(f"'{relative}' goes through a link; links are not packaged")
    return current


def _open_regular(path: Path, relative: str) -> int:
    """An fd of the regular file at path. Opened without following a final link and without blocking
    on a FIFO, then checked, so a file swapped after the walk is still refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        refuse(f"'{relative}' cannot be read ({exc.strerror}); links and devices are not packaged")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        refuse(f"'{relative}' is not a regular file (links and devices are not packaged)")
    return fd


def _walk(root: Path, deadline: float | None = None):
    """Regular files under root, sorted, refusing links and special files and bounding the tree: its
    files, bytes and depth (walked without recursion, so a folder nested thousands deep is refused in
    words, not by a RecursionError) and the time it takes (`deadline`, a time.monotonic() value)."""
    files, total = [], 0
    folders = [(root, 0)]
    while folders:
        folder, depth = folders.pop()
        if deadline is not None and time.monotonic() > deadline:
            raise UserError("timed_out", "the build's time ran out while the prototype was being packaged")
        if depth > MAX_DEPTH:
            refuse(f"the bundle's folders are nested more than {MAX_DEPTH} deep")
        with os.scandir(folder) as entries:
            listed = sorted(entries, key=lambda entry: entry.name)
        subfolders = []
        for entry in listed:
            path = Path(entry.path)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                subfolders.append((path, depth + 1))
                continue
            if stat.S_ISLNK(info.st_mode) and entry.is_dir():
                refuse(f"'{path.relative_to(root)}' is a link; links are not packaged")
            if not stat.S_ISREG(info.st_mode):
                refuse(f"'{path.relative_to(root)}' is not a regular file (links and devices are not packaged)")
            files.append(path)
            total += info.st_size
            if len(files) > MAX_FILES:
                refuse(f"the bundle has more than {MAX_FILES} files")
            if total > MAX_BYTES:
                refuse(f"the bundle is larger than {MAX_BYTES // 2**20} MiB")
        folders.extend(reversed(subfolders))
    return sorted(files)


def packaged_name(stem: str, name: str, kind: str) -> str:
    """The artifact's file name in the output folder: the build's own name, prefixed with `stem` (the
    target) so the folder says which app it is, unless the name already starts with it (`notes-app.pyz`,
    not `notes-app-notes-app.pyz`). A wheel keeps its own name: pip reads the package and version from it."""
    if kind == "wheel" or name.startswith(stem):
        return name
    return f"{stem}-{name}"


def _bundle_web(tree: Path, folder: str, entry: str, target: Path, deadline: float | None) -> dict:
    """Zip the web bundle in `folder` (relative to the tree) into `target`; its metadata."""
    source = _inside(tree, folder)
    if not source.is_dir():
        refuse(f"'{folder}' should be a folder holding the web bundle")
    files = _walk(source, deadline)
    if not any(f.relative_to(source).as_posix() == str(PurePosixPath(entry)) for f in files):
        refuse(f"the bundle has no '{entry}' to open")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(source).as_posix(), ZIP_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with (
                open(_open_regular(path, path.relative_to(tree).as_posix()), "rb") as handle,
                bundle.open(info, "w", force_zip64=True) as member,
            ):
                _copy(handle, member, path.relative_to(tree).as_posix(), deadline)
    return {"entry": str(PurePosixPath(entry)), "files": len(files)}


def package(
    tree: Path,
    recipe: Recipe,
    output_dir: Path,
    stem: str,
    *,
    deadline: float | None = None,
    signing_key: SigningKey | None = None,
) -> ArtifactFile:
    """Package the recipe's artifact from the verified tree into output_dir, by `deadline` (a
    time.monotonic() value). Files are copied in chunks, never read whole into memory. An APK is signed
    with `signing_key` here, on the host, after the sandboxed build: without a key it stays as the
    build left it (unsigned, as the example's build makes it, cannot be installed)."""
    spec = recipe.artifact
    source = _inside(tree, spec.path)
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata: dict = {}
    if spec.kind == "web":
        target = output_dir / f"{stem}-web.zip"
        metadata = _bundle_web(tree, spec.path, spec.entry, target, deadline)
    else:
        if spec.kind == "apk" and source.suffix.lower() == ".aab":
            refuse(AAB_REFUSED)
        info = os.lstat(source)
        if not stat.S_ISREG(info.st_mode):
            refuse(f"'{spec.path}' should be one file")
        if info.st_size > MAX_BYTES:
            refuse(f"'{spec.path}' is larger than {MAX_BYTES // 2**20} MiB")
        target = output_dir / packaged_name(stem, source.name, spec.kind)
        with open(_open_regular(source, spec.path), "rb") as src, open(target, "wb") as dst:
            try:
                _copy(src, dst, spec.path, deadline)
            except UserError:
                dst.close()
                target.unlink()
                raise
        metadata = app_metadata(spec.kind, target)
        if spec.kind == "apk" and signing_key is not None and "unreadable" not in metadata:
            metadata.update(sign(target, signing_key))
        if spec.kind == "pyz":
            metadata = {"run": f"python3 {source.name}"}
    return ArtifactFile(
        kind=spec.kind,
        path=target,
        size=target.stat().st_size,
        sha256=sha256_of(target),
        content_type=CONTENT_TYPES[spec.kind],
        filename=source.name if spec.kind != "web" else f"{stem}-web.zip",
        metadata=metadata,
    )


def package_web_part(
    tree: Path, recipe: Recipe, output_dir: Path, stem: str, *, deadline: float | None = None
) -> ArtifactFile | None:
    """The web part of a hybrid app (the recipe's [artifact] web_preview folder) as a web artifact, so
    the store shows it in its phone frame next to the app; None when the recipe names none."""
    spec = recipe.artifact
    if not spec.web_preview:
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{stem}-web.zip"
    metadata = _bundle_web(tree, spec.web_preview, spec.entry, target, deadline)
    metadata["web_part_of"] = spec.kind
    return ArtifactFile(
        kind="web",
        path=target,
        size=target.stat().st_size,
        sha256=sha256_of(target),
        content_type=CONTENT_TYPES["web"],
        filename=target.name,
        metadata=metadata,
    )


def sign(apk: Path, key: SigningKey) -> dict:
    """Sign the packaged APK with the store's key, then check it as a phone would (apksigner verify):
    the signature's schemes and signer, for the install page. Our failure, not the build's: a key that
    cannot sign is the store's to fix."""
    try:
        sign_apk(apk, key)
        checked = verify_apk(apk)
    except SigningError as exc:
        apk.unlink(missing_ok=True)
        raise ServiceError("signing_failed", str(exc)) from None
    return {**checked, "signed_with": key.kind}


def _copy(src, dst, relative: str, deadline: float | None) -> None:
    """Copy in chunks up to MAX_BYTES (a file may have grown after it was checked)."""
    copied = 0
    while chunk := src.read(1 << 20):
        copied += len(chunk)
        if copied > MAX_BYTES:
            refuse(f"'{relative}' is larger than {MAX_BYTES // 2**20} MiB")
        if deadline is not None and time.monotonic() > deadline:
            raise UserError("timed_out", "the build's time ran out while the prototype was being packaged")
        dst.write(chunk)


def app_metadata(kind: str, path: Path) -> dict:
    """What an .apk or .ipa says about itself ({} for other kinds); refuses files that are not
    installable apps (an app bundle, a zip without a manifest)."""
    reader = {"apk": read_apk, "ipa": read_ipa}.get(kind)
    if reader is None:
        return {}
    try:
        return reader(path)
    except AppError as exc:
        path.unlink(missing_ok=True)
        refuse(str(exc))


def unpack_web(
    bundle: Path, destination: Path, *, max_files: int = MAX_FILES, max_bytes: int = MAX_UNPACKED_BYTES
) -> int:
    """Unpack a web bundle for serving. Refuses absolute paths, '..', backslashes, links and other
    special entries, and size or entry-count bombs (by the sizes the archive declares and by what is
    actually written). Every refusal, and a damaged archive, is a ValueError saying why. Returns the
    number of entries."""
    try:
        archive = zipfile.ZipFile(bundle)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"the bundle is not a zip archive: {exc}") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > max_files:
            raise ValueError(f"the bundle has {len(entries)} entries, more than {max_files}")
        if sum(e.file_size for e in entries) > max_bytes:
            raise ValueError(f"the bundle unpacks to more than {max_bytes} bytes (by the sizes it declares)")
        destination.mkdir(parents=True, exist_ok=True)
        root = destination.resolve()
        written = 0
        for entry in entries:
            name = PurePosixPath(entry.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in entry.filename or not name.parts:
                raise ValueError(f"unsafe path in bundle: {entry.filename!r}")
            mode = entry.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ValueError(f"link in bundle: {entry.filename!r}")
            if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise ValueError(f"special file in bundle: {entry.filename!r}")
            target = (root / name).resolve()
            if root not in target.parents:
                raise ValueError(f"unsafe path in bundle: {entry.filename!r}")
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with archive.open(entry) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise ValueError(f"the bundle unpacks to more than {max_bytes} bytes")
                        dst.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                # An entry whose data does not match what the archive declares (its size or checksum).
                raise ValueError(f"the bundle is damaged at {entry.filename!r}: {exc}") from None
        return len(entries)
