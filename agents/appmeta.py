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


def read_apk(path: Path) -> dict:
    """Metadata of an .apk from its binary AndroidManifest.xml. App bundles (.aab) are refused: they
    cannot be installed on a device."""
    with _open_zip(path, "Android app (.apk)") as archive:
        names = set(archive.namelist())
        if "AndroidManifest.xml" not in names:
            if "base/manifest/AndroidManifest.xml" in names or "BundleConfig.pb" in names:
                raise AppError(AAB_REFUSED)
            raise AppError(f"'{path.name}' is not an Android app: it has no AndroidManifest.xml")
        data = _read_entry(archive, archive.getinfo("AndroidManifest.xml"))
    if data.lstrip().startswith(b"<"):
        raise AppError("the APK's AndroidManifest.xml is plain text, not compiled: the APK was not built by the SDK")
    try:
        manifest = parse_axml(data)
    except ValueError as exc:
        return {"unreadable": f"the APK's manifest could not be fully read: {exc}"}
    return manifest_metadata(manifest)


AAB_REFUSED = (
    "This is an Android App Bundle (.aab), which phones cannot install directly. Build an APK instead "
    "(for example `./gradlew assembleRelease` or `assembleDebug`, or `bundletool build-apks --mode=universal`) "
    "and point the recipe's [artifact] path at the .apk."
)

# Attribute resource ids in the android namespace: they identify attributes even when their names
# were stripped from the string pool by shrinking tools.
ANDROID_ATTRS = {
    0x01010001: "label",
    0x01010002: "icon",
    0x0101020C: "minSdkVersion",
    0x01010270: "targetSdkVersion",
    0x0101021B: "versionCode",
    0x0101021C: "versionName",
}
ANDROID_NS = "http://schemas.android.com/apk/res/android"


def manifest_metadata(manifest: list[tuple[str, dict]]) -> dict:
    """The install page's fields from parse_axml's elements."""
    elements: dict[str, dict] = {}
    for name, attrs in manifest:
        elements.setdefault(name, attrs)  # the first of each: <manifest>, <uses-sdk>, <application>
    root = elements.get("manifest", {})
    sdk = elements.get("uses-sdk", {})
    app = elements.get("application", {})
    package = root.get("package")
    if not isinstance(package, str) or not package:
        raise AppError("the APK's manifest names no package")
    metadata: dict = {"package": package}
    for key, attr, element in (
        ("version_name", "versionName", root),
        ("version_code", "versionCode", root),
        ("min_sdk", "minSdkVersion", sdk),  # a number, or a preview's codename
        ("target_sdk", "targetSdkVersion", sdk),
    ):
        value = element.get(attr)
        if isinstance(value, Reference):
            metadata[f"{key}_resource"] = str(value)
        elif value is not None:
            metadata[key] = value
    label = app.get("label")
    if isinstance(label, str):
        metadata["display_name"] = label
    elif isinstance(label, Reference):
        metadata["label_resource"] = str(label)
    if isinstance(app.get("icon"), Reference):
        metadata["icon_resource"] = str(app["icon"])
    return metadata


class Reference(int):
    """A resource reference (@0x7f0e001b): the value lives in resources.arsc, which is not read."""

    def __str__(self) -> str:
        return f"@0x{int(self):08x}"

    __repr__ = __str__


# Chunk types of Android's binary XML (frameworks/base/libs/androidfw/include/androidfw/ResourceTypes.h).
RES_STRING_POOL = 0x0001
RES_XML = 0x0003
RES_XML_START_ELEMENT = 0x0102
RES_XML_RESOURCE_MAP = 0x0180
UTF8_FLAG = 1 << 8
NO_INDEX = 0xFFFFFFFF
TYPE_REFERENCE, TYPE_STRING, TYPE_INT_DEC, TYPE_INT_HEX, TYPE_INT_BOOLEAN = 0x01, 0x03, 0x10, 0x11, 0x12
MAX_STRINGS = 200_000


def parse_axml(data: bytes) -> list[tuple[str, dict]]:
    """The start elements of a binary XML document in order, as (name, attributes). Attributes are keyed
    by their local name (android attributes by resource id when known); values are str, int, bool or
    Reference. Raises ValueError for a malformed document."""
    try:
        return _parse_axml(data)
    except (struct.error, IndexError) as exc:  # bounds are checked; this is the second line
        raise ValueError(f"malformed: {exc}") from None


def _parse_axml(data: bytes) -> list[tuple[str, dict]]:
    if len(data) < 8:
        raise ValueError("too short")
    kind, header_size, size = struct.unpack_from("<HHI", data, 0)
    if kind != RES_XML or header_size < 8 or size > len(data) or size < header_size:
        raise ValueError("not a binary XML document")
    strings: list[str] = []
    resource_ids: list[int] = []
    elements: list[tuple[str, dict]] = []
    offset = header_size
    while offset + 8 <= size:
        kind, header_size, chunk_size = struct.unpack_from("<HHI", data, offset)
        if chunk_size < 8 or header_size < 8 or header_size > chunk_size or offset + chunk_size > size:
            raise ValueError(f"bad chunk at byte {offset}")
        chunk = data[offset : offset + chunk_size]
        if kind == RES_STRING_POOL:
            strings = _string_pool(chunk, header_size)
        elif kind == RES_XML_RESOURCE_MAP:
            resource_ids = list(struct.unpack_from(f"<{(chunk_size - header_size) // 4}I", chunk, header_size))
        elif kind == RES_XML_START_ELEMENT:
            elements.append(_start_element(chunk, header_size, strings, resource_ids))
        offset += chunk_size
    return elements


def _string_pool(chunk: bytes, header_size: int) -> list[str]:
    if header_size < 28:
        raise ValueError("short string pool header")
    count, _styles, flags, strings_start, _styles_start = struct.unpack_from("<IIIII", chunk, 8)
    if count > MAX_STRINGS or header_size + 4 * count > len(chunk) or strings_start > len(chunk):
        raise ValueError("bad string pool")
    offsets = struct.unpack_from(f"<{count}I", chunk, header_size)
    utf8 = bool(flags & UTF8_FLAG)
    strings = []
    for relative in offsets:
        position = strings_start + relative
        if position >= len(chunk):
            raise ValueError("string outside its pool")
        strings.append(_utf8_string(chunk, position) if utf8 else _utf16_string(chunk, position))
    return strings


def _utf8_string(chunk: bytes, position: int) -> str:
    def length(at: int) -> tuple[int, int]:
        first = chunk[at]
        if first & 0x80:
            return ((first & 0x7F) << 8) | chunk[at + 1], at + 2
        return first, at + 1

    try:
        _chars, position = length(position)
        size, position = length(position)
    except IndexError:
        raise ValueError("string outside its pool") from None
    if position + size > len(chunk):
        raise ValueError("string outside its pool")
    return chunk[position : position + size].decode("utf-8", errors="replace")


def _utf16_string(chunk: bytes, position: int) -> str:
    if position + 2 > len(chunk):
        raise ValueError("string outside its pool")
    (units,) = struct.unpack_from("<H", chunk, position)
    position += 2
    if units & 0x8000:
        if position + 2 > len(chunk):
            raise ValueError("string outside its pool")
        units = ((units & 0x7FFF) << 16) | struct.unpack_from("<H", chunk, position)[0]
        position += 2
    if position + 2 * units > len(chunk):
        raise ValueError("string outside its pool")
    return chunk[position : position + 2 * units].decode("utf-16-le", errors="replace")


def _start_element(chunk: bytes, header_size: int, strings: list[str], resource_ids: list[int]):
    def string(index: int) -> str:
        if index == NO_INDEX:
            return ""
        if index >= len(strings):
            raise ValueError(f"string {index} is not in the pool")
        return strings[index]

    if header_size + 20 > len(chunk):
        raise ValueError("short element")
    _ns, name, attr_start, attr_size, count = struct.unpack_from("<IIHHH", chunk, header_size)
    if attr_size < 20:
        raise ValueError("bad attribute size")
    attrs: dict = {}
    base = header_size + attr_start
    if base + count * attr_size > len(chunk):
        raise ValueError("attributes outside their element")
    for n in range(count):
        ns, attr_name, raw, _size, _res0, data_type, value = struct.unpack_from("<IIIHBBI", chunk, base + n * attr_size)
        key = ANDROID_ATTRS.get(resource_ids[attr_name]) if attr_name < len(resource_ids) else None
        if key is None:
            key = string(attr_name)
            if ns != NO_INDEX and string(ns) == ANDROID_NS and key not in ANDROID_ATTRS.values():
                key = f"android:{key}"
        if data_type == TYPE_STRING:
            attrs[key] = string(raw if raw != NO_INDEX else value)
        elif data_type == TYPE_REFERENCE:
            attrs[key] = Reference(value)
        elif data_type == TYPE_INT_BOOLEAN:
            attrs[key] = value != 0
        elif data_type in (TYPE_INT_DEC, TYPE_INT_HEX):
            attrs[key] = value - (1 << 32) if value & 0x80000000 else value
        elif raw != NO_INDEX:
            attrs[key] = string(raw)
    return string(name), attrs
