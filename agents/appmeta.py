"""What an app package says about itself: bundle or package id, version, build number, minimum OS,
name and icon, read from the .ipa or .apk the build produced (for the install page and the iOS
manifest; see reference/install-links.md). The keys are those store/install.py reads: bundle_id,
display_name, version, build, min_os for iOS; package, display_name, version_name, version_code,
min_sdk for Android; icon (a base64 PNG) when one can be shown as it is.

Both are zip files written by untrusted commands: entries are read with size limits, and nothing is
extracted or executed. `read_ipa` and `read_apk` raise AppError when the file is not an installable
app; a manifest that is present but cannot be fully understood still gives what could be read.
"""

from __future__ import annotations

import base64
import plistlib
import re
import struct
import zipfile
import zlib
from pathlib import Path

MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_ICON_BYTES = 1024 * 1024  # as store/install.py accepts
APP_PLIST = re.compile(r"^Payload/([^/]+)\.app/Info\.plist$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class AppError(ValueError):
    """The file is not an app that can be installed (the message says why, in plain words)."""


def _open_zip(path: Path, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AppError(f"'{path.name}' is not a valid {what} (it should be a zip archive): {exc}") from None


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """An entry's bytes, refusing entries larger than `limit` by what they declare or really hold."""
    if info.file_size > limit:
        raise AppError(f"'{info.filename}' is larger than {limit // 2**20} MiB")
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise AppError(f"'{info.filename}' is damaged in the archive: {exc}") from None
    if len(data) > limit:
        raise AppError(f"'{info.filename}' is larger than {limit // 2**20} MiB")
    return data


# --- iOS ------------------------------------------------------------------------------------------


def read_ipa(path: Path) -> dict:
    """Metadata of an .ipa from Payload/<Name>.app/Info.plist (binary or XML)."""
    with _open_zip(path, "iOS app (.ipa)") as archive:
        plists = [info for info in archive.infolist() if APP_PLIST.match(info.filename)]
        if len(plists) != 1:
            raise AppError(
                f"'{path.name}' is not an iOS app: it should hold exactly one Payload/<Name>.app/Info.plist"
                f" (found {len(plists)})"
            )
        raw = _read_entry(archive, plists[0])
        try:
            info = plistlib.loads(raw)
        except Exception as exc:  # noqa: BLE001 - XML and binary parsers raise various errors on bad input
            raise AppError(f"the app's Info.plist cannot be read: {exc}") from None
        if not isinstance(info, dict):
            raise AppError("the app's Info.plist is not a dictionary")
        app_dir = plists[0].filename.rsplit("/", 1)[0]
        bundle_id = _text(info.get("CFBundleIdentifier"))
        if not bundle_id:
            raise AppError("the app's Info.plist has no CFBundleIdentifier")
        metadata = {
            "bundle_id": bundle_id,
            "display_name": _text(info.get("CFBundleDisplayName")) or _text(info.get("CFBundleName")),
            "version": _text(info.get("CFBundleShortVersionString")),
            "build": _text(info.get("CFBundleVersion")),
            "min_os": _text(info.get("MinimumOSVersion")),
            "executable": _text(info.get("CFBundleExecutable")),
        }
        icon = _ipa_icon(archive, app_dir, info)
        if icon:
            metadata.update(icon)
    return {key: value for key, value in metadata.items() if value not in (None, "")}


def _text(value) -> str | None:
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _icon_names(info: dict) -> list[str]:
    """Icon base names from CFBundleIcons(~ipad) → CFBundlePrimaryIcon → CFBundleIconFiles, and the
    older top-level CFBundleIconFiles and CFBundleIconFile."""
    names: list = []
    for key in ("CFBundleIcons", "CFBundleIcons~ipad"):
        icons = info.get(key)
        primary = icons.get("CFBundlePrimaryIcon") if isinstance(icons, dict) else None
        if isinstance(primary, dict) and isinstance(primary.get("CFBundleIconFiles"), list):
            names += primary["CFBundleIconFiles"]
    if isinstance(info.get("CFBundleIconFiles"), list):
        names += info["CFBundleIconFiles"]
    names.append(info.get("CFBundleIconFile"))
    return [n.removesuffix(".png") for n in names if isinstance(n, str) and n and "/" not in n]


def _ipa_icon(archive: zipfile.ZipFile, app_dir: str, info: dict) -> dict | None:
    """The largest of the app's icon PNGs: its path in the archive, its size from the PNG header, and
    whether it is 'CgBI'-crushed (as Xcode ships them; ordinary decoders refuse those). Not decoded."""
    names = _icon_names(info)
    if not names:
        return None
    best = None
    for entry in archive.infolist():
        folder, _, filename = entry.filename.rpartition("/")
        if folder != app_dir or not filename.endswith(".png"):
            continue
        stem = filename[:-4]
        if not any(stem == n or stem.startswith(n + "@") or stem.startswith(n + "~") for n in names):
            continue
        width, height, crushed = _png_header(archive, entry)
        scale = re.search(r"@(\d)x", stem)
        # Pixels when the header says, otherwise the @Nx scale, then the file size, as the tie-break.
        rank = (width * height, int(scale.group(1)) if scale else 1, entry.file_size)
        if best is None or rank > best[0]:
            best = (rank, entry.filename, width, height, crushed)
    if best is None:
        return None
    _, name, width, height, crushed = best
    icon: dict = {"icon_path": name}
    if width:
        icon["icon_size"] = f"{width}x{height}"
    if crushed:
        icon["icon_cgbi"] = True
    elif width and archive.getinfo(name).file_size <= MAX_ICON_BYTES:
        # A plain PNG travels with the metadata (base64) for the install page, which decodes and
        # re-encodes it. Crushed ones need un-crushing first, so only their path is kept.
        icon["icon"] = base64.b64encode(_read_entry(archive, archive.getinfo(name), MAX_ICON_BYTES)).decode()
    return icon


def _png_header(archive: zipfile.ZipFile, entry: zipfile.ZipInfo) -> tuple[int, int, bool]:
    """(width, height, CgBI-crushed) from a PNG's first chunks; (0, 0, False) when it is not a PNG."""
    try:
        with archive.open(entry) as handle:
            head = handle.read(64)
    except (zipfile.BadZipFile, OSError, NotImplementedError):
        return 0, 0, False
    if not head.startswith(PNG_SIGNATURE):
        return 0, 0, False
    offset, crushed = 8, False
    while offset + 8 <= len(head):
        length, kind = struct.unpack_from(">I4s", head, offset)
        if kind == b"CgBI":
            crushed = True
        elif kind == b"IHDR" and offset + 16 <= len(head):
            width, height = struct.unpack_from(">II", head, offset + 8)
            return width, height, crushed
        else:
            break
        offset += 12 + length
    return 0, 0, crushed


# --- Android --------------------------------------------------------------------------------------
#
# The manifest (binary XML) and the resource table (resources.arsc, where the label and the icon
# usually live as @string/… and @drawable/… references) are read with androguard, a maintained APK
# parser: tests/agents/test_android_build.py checks that it says what `aapt dump badging` says, on the
# example's APK and on a Gradle-built one.

AAB_REFUSED = (
    "This is an Android App Bundle (.aab), which phones cannot install directly. Build an APK instead "
    "(for example `./gradlew assembleRelease` or `assembleDebug`, or `bundletool build-apks --mode=universal`) "
    "and point the recipe's [artifact] path at the .apk."
)
MAX_APK_BYTES = 512 * 1024 * 1024  # androguard holds the APK in memory while it reads it


def read_apk(path: Path) -> dict:
    """Metadata of an .apk: package, version_code, version_name, min_sdk, target_sdk, display_name
    (the label, resolved), icon_path and icon (a base64 PNG). App bundles (.aab) are refused: they
    cannot be installed on a device."""
    with _open_zip(path, "Android app (.apk)") as archive:
        names = set(archive.namelist())
        if "AndroidManifest.xml" not in names:
            if "base/manifest/AndroidManifest.xml" in names or "BundleConfig.pb" in names:
                raise AppError(AAB_REFUSED)
            raise AppError(f"'{path.name}' is not an Android app: it has no AndroidManifest.xml")
        head = _read_entry(archive, archive.getinfo("AndroidManifest.xml"))[:64]
    if head.lstrip().startswith(b"<"):
        raise AppError("the APK's AndroidManifest.xml is plain text, not compiled: the APK was not built by the SDK")
    if path.stat().st_size > MAX_APK_BYTES:
        raise AppError(f"'{path.name}' is larger than {MAX_APK_BYTES // 2**20} MiB")
    try:
        apk = _androguard_apk(path)
        package = apk.get_package()
    except Exception as exc:  # noqa: BLE001 - a parser fed untrusted bytes fails in many ways; say so, keep the file
        return {"unreadable": f"the APK's manifest could not be fully read: {exc}"}
    if not package:
        return {"unreadable": "the APK's manifest could not be fully read: it names no package"}
    metadata: dict = {"package": package}
    for key, read in (
        ("version_code", apk.get_androidversion_code),
        ("version_name", apk.get_androidversion_name),
        ("min_sdk", apk.get_min_sdk_version),  # a number, or a preview's codename
        ("target_sdk", apk.get_target_sdk_version),
        ("display_name", apk.get_app_name),
    ):
        value = _safely(read)
        if value not in (None, ""):
            metadata[key] = int(value) if key != "display_name" and str(value).isdigit() else str(value)
    metadata.update(_apk_icon(path, apk))
    return metadata


def _androguard_apk(path: Path):
    from androguard.core.apk import APK  # imported on first use: the store's web processes never need it
    from loguru import logger

    logger.disable("androguard")  # it logs every chunk it reads; its failures reach us as exceptions
    return APK(str(path))


def _safely(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 - one unreadable field leaves the others
        return None


def _apk_icon(path: Path, apk) -> dict:
    """The launcher icon androguard resolves (the highest density, as `aapt dump badging` names it);
    an adaptive icon (XML) falls back to the best raster one. A PNG of at most MAX_ICON_BYTES travels
    with the metadata for the install page, which decodes and re-encodes it."""
    name = _safely(apk.get_app_icon)
    if isinstance(name, str) and name.endswith(".xml"):
        name = _safely(lambda: apk.get_app_icon(max_dpi=65533)) or name  # below "anydpi"
    if not isinstance(name, str) or not name:
        return {}
    icon: dict = {"icon_path": name}
    with _open_zip(path, "Android app (.apk)") as archive:
        try:
            entry = archive.getinfo(name)
        except KeyError:
            return icon
        if name.endswith(".png") and entry.file_size <= MAX_ICON_BYTES:
            width, height, _crushed = _png_header(archive, entry)
            if width:
                icon["icon_size"] = f"{width}x{height}"
                icon["icon"] = base64.b64encode(_read_entry(archive, entry, MAX_ICON_BYTES)).decode()
    return icon
