"""Packaging a verified workspace into an artifact, and unpacking web bundles safely.

The workspace was written by untrusted commands, and the host reads it as a more privileged user:
links, devices and oversized trees are refused instead of followed, so a build cannot make the store
package a file from outside its workspace.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

from agents.errors import UserError
from agents.recipe import Recipe
from agents.spec import ArtifactFile

MAX_FILES = 20_000
MAX_BYTES = 512 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
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


def _walk(root: Path):
    """Regular files under root, sorted, refusing links and special files and bounding the tree."""
    files, total = [], 0
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs):
            if stat.S_ISLNK(os.lstat(Path(folder) / name).st_mode):
                refuse(f"'{(Path(folder) / name).relative_to(root)}' is a link; links are not packaged")
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode):
                refuse(f"'{path.relative_to(root)}' is not a regular file (links and devices are not packaged)")
            files.append(path)
            total += info.st_size
            if len(files) > MAX_FILES:
                refuse(f"the bundle has more than {MAX_FILES} files")
            if total > MAX_BYTES:
                refuse(f"the bundle is larger than {MAX_BYTES // 2**20} MiB")
    return files


def package(tree: Path, recipe: Recipe, output_dir: Path, stem: str) -> ArtifactFile:
    """Package the recipe's artifact from the verified tree into output_dir."""
    spec = recipe.artifact
    source = _inside(tree, spec.path)
    output_dir.mkdir(parents=True, exist_ok=True)
    metadata: dict = {}
    if spec.kind == "web":
        if not source.is_dir():
            refuse(f"'{spec.path}' should be a folder holding the web bundle")
        files = _walk(source)
        entry = PurePosixPath(spec.entry)
        if not any(f.relative_to(source).as_posix() == str(entry) for f in files):
            refuse(f"the bundle has no '{spec.entry}' to open")
        target = output_dir / f"{stem}-web.zip"
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(source).as_posix(), ZIP_DATE)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as handle:
                    bundle.writestr(info, handle.read())
        metadata = {"entry": str(entry), "files": len(files)}
    else:
        info = os.lstat(source)
        if not stat.S_ISREG(info.st_mode):
            refuse(f"'{spec.path}' should be one file")
        if info.st_size > MAX_BYTES:
            refuse(f"'{spec.path}' is larger than {MAX_BYTES // 2**20} MiB")
        target = output_dir / f"{stem}-{source.name}"
        with open(source, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
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


def unpack_web(
    bundle: Path, destination: Path, *, max_files: int = MAX_FILES, max_bytes: int = MAX_UNPACKED_BYTES
) -> int:
    """Unpack a web bundle for serving. Refuses absolute paths, '..', links, and size or entry-count
    bombs (by the sizes the archive declares and by what is actually written). Returns the file count."""
    with zipfile.ZipFile(bundle) as archive:
        entries = archive.infolist()
        if len(entries) > max_files:
            raise ValueError(f"the bundle has {len(entries)} entries, more than {max_files}")
        if sum(e.file_size for e in entries) > max_bytes:
            raise ValueError("the bundle unpacks to more than the allowed size")
        destination.mkdir(parents=True, exist_ok=True)
        root = destination.resolve()
        written = 0
        for entry in entries:
            name = PurePosixPath(entry.filename)
            if name.is_absolute() or ".." in name.parts or "\\" in entry.filename or not name.parts:
                raise ValueError(f"unsafe path in bundle: {entry.filename!r}")
            if stat.S_ISLNK(entry.external_attr >> 16):
                raise ValueError(f"link in bundle: {entry.filename!r}")
            target = (root / name).resolve()
            if root not in target.parents:
                raise ValueError(f"unsafe path in bundle: {entry.filename!r}")
            if entry.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(entry) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise ValueError("the bundle unpacks to more than the allowed size")
                    dst.write(chunk)
        return len(entries)
