"""Packaging what a build produced, reading app metadata from .apk and .ipa files made here (a small
binary-XML encoder below writes the APK's manifest), and unpacking web bundles that try to escape."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import plistlib
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from agents.appmeta import AppError, read_apk, read_ipa
from agents.errors import UserError
from agents.packaging import package, unpack_web
from agents.recipe import ArtifactSpec, Recipe, Step

# --- a minimal binary XML (AXML) encoder, the format aapt writes AndroidManifest.xml in -------------

ANDROID = "http://schemas.android.com/apk/res/android"


class Reference(int):
    """A resource reference (@0x7f0e001b) as an attribute value, the way aapt writes one."""


ATTR_IDS = {"label": 0x01010001, "icon": 0x01010002, "name": 0x01010003, "debuggable": 0x0101000F,
            "minSdkVersion": 0x0101020C, "targetSdkVersion": 0x01010270, "versionCode": 0x0101021B,
            "versionName": 0x0101021C}  # fmt: skip


def _chunk(kind: int, header: bytes, body: bytes) -> bytes:
    header_size = 8 + len(header)
    return struct.pack("<HHI", kind, header_size, header_size + len(body)) + header + body


def _pool(strings: list[str], utf8: bool) -> bytes:
    data, offsets = bytearray(), []
    for text in strings:
        offsets.append(len(data))
        if utf8:
            raw = text.encode()
            data += bytes([len(text), len(raw)]) + raw + b"\0"
        else:
            data += struct.pack("<H", len(text)) + text.encode("utf-16-le") + b"\0\0"
    data += b"\0" * (-len(data) % 4)
    header = struct.pack("<IIIII", len(strings), 0, 0x100 if utf8 else 0, 28 + 4 * len(strings), 0)
    return _chunk(0x0001, header, struct.pack(f"<{len(strings)}I", *offsets) + bytes(data))


def axml(tree: tuple, *, utf8: bool = False, strip_names: bool = False) -> bytes:
    """Binary XML for `tree` = (name, {attr: value}, [children]). Attribute keys "android:x" are in the
    android namespace (with their resource ids), others in none. Values: str, int, bool, Reference."""
    android_attrs: list[str] = []
    strings: list[str] = []

    def collect(node):
        for key in node[1]:
            local = key.removeprefix("android:")
            if key.startswith("android:") and local not in android_attrs:
                android_attrs.append(local)
        for child in node[2]:
            collect(child)

    collect(tree)
    # Attribute names with resource ids come first in the pool, in the order of the resource map.
    strings += ["" if strip_names else name for name in android_attrs]

    def index(text: str) -> int:
        if text not in strings or (strip_names and strings.index(text) < len(android_attrs)):
            strings.append(text)
            return len(strings) - 1
        return strings.index(text)

    body = bytearray()
    ns_uri, ns_prefix = index(ANDROID), index("android")
    body += _chunk(0x0100, struct.pack("<II", 1, 0xFFFFFFFF), struct.pack("<II", ns_prefix, ns_uri))

    def element(node):
        name, attrs, children = node
        encoded = bytearray()
        for key, value in attrs.items():
            if key.startswith("android:"):
                ns, attr = ns_uri, android_attrs.index(key.removeprefix("android:"))
            else:
                ns, attr = 0xFFFFFFFF, index(key)
            raw = 0xFFFFFFFF
            if isinstance(value, Reference):
                kind, data = 0x01, int(value)
            elif isinstance(value, bool):
                kind, data = 0x12, 0xFFFFFFFF if value else 0
            elif isinstance(value, int):
                kind, data = 0x10, value & 0xFFFFFFFF
            else:
                kind, data = 0x03, index(value)
                raw = data
            encoded += struct.pack("<IIIHBBI", ns, attr, raw, 8, 0, kind, data)
        ext = struct.pack("<IIHHHHHH", 0xFFFFFFFF, index(name), 20, 20, len(attrs), 0, 0, 0)
        line = struct.pack("<II", 1, 0xFFFFFFFF)
        out = _chunk(0x0102, line, ext + bytes(encoded))
        for child in children:
            out += element(child)
        return out + _chunk(0x0103, line, struct.pack("<II", 0xFFFFFFFF, index(name)))

    body += element(tree)
    body += _chunk(0x0101, struct.pack("<II", 1, 0xFFFFFFFF), struct.pack("<II", ns_prefix, ns_uri))
    resource_map = _chunk(0x0180, b"", struct.pack(f"<{len(android_attrs)}I", *(ATTR_IDS[a] for a in android_attrs)))
    return _chunk(0x0003, b"", _pool(strings, utf8) + resource_map + bytes(body))


MANIFEST = (
    "manifest",
    {"android:versionCode": 42, "android:versionName": "1.4.2", "package": "com.example.player"},
    [
        ("uses-sdk", {"android:minSdkVersion": 24, "android:targetSdkVersion": 34}, []),
        ("uses-permission", {"android:name": "android.permission.INTERNET"}, []),
        (
            "application",
            {"android:label": Reference(0x7F0E001B), "android:icon": Reference(0x7F080001), "android:debuggable": True},
            [("activity", {"android:name": ".MainActivity", "android:label": "Not the app"}, [])],
        ),
    ],
)


def make_apk(path: Path, manifest: bytes | None = None, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as apk:
        if manifest is not None:
            apk.writestr("AndroidManifest.xml", manifest)
        apk.writestr("classes.dex", b"dex\n035\0")
        apk.writestr("resources.arsc", b"\x02\x00\x0c\x00")
        for name, data in (extra or {}).items():
            apk.writestr(name, data)
    return path


def png(width: int, height: int, *, crushed: bool = False) -> bytes:
    chunks = b""
    if crushed:
        chunks += struct.pack(">I", 4) + b"CgBI" + b"\x50\x00\x20\x06" + b"\0\0\0\0"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunks += struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + b"\0\0\0\0"
    return b"\x89PNG\r\n\x1a\n" + chunks + b"IDAT-not-really"


INFO = {
    "CFBundleIdentifier": "com.example.Player",
    "CFBundleShortVersionString": "2.1",
    "CFBundleVersion": "210.7",
    "MinimumOSVersion": "15.0",
    "CFBundleDisplayName": "Player",
    "CFBundleName": "PlayerApp",
    "CFBundleExecutable": "Player",
    "CFBundleIcons": {"CFBundlePrimaryIcon": {"CFBundleIconFiles": ["AppIcon60x60"], "CFBundleIconName": "AppIcon"}},
    "CFBundleIcons~ipad": {"CFBundlePrimaryIcon": {"CFBundleIconFiles": ["AppIcon76x76"]}},
}


def make_ipa(path: Path, info: dict | None = INFO, fmt=plistlib.FMT_BINARY, files: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as ipa:
        ipa.writestr("Payload/Player.app/Player", b"\xcf\xfa\xed\xfe")
        if info is not None:
            ipa.writestr("Payload/Player.app/Info.plist", plistlib.dumps(info, fmt=fmt))
        for name, data in (files or {}).items():
            ipa.writestr(name, data)
    return path


ICONS = {
    "Payload/Player.app/AppIcon60x60@2x.png": png(120, 120, crushed=True),
    "Payload/Player.app/AppIcon60x60@3x.png": png(180, 180, crushed=True),
    "Payload/Player.app/AppIcon76x76@2x~ipad.png": png(152, 152, crushed=True),
    "Payload/Player.app/Assets.car": b"car",
    "Payload/Player.app/Frameworks/Big.framework/AppIcon60x60@3x.png": png(1024, 1024),  # not the app's
}


def recipe(kind: str, path: str, target_kind: str = "android") -> Recipe:
    return Recipe(name="App", kind=target_kind, artifact=ArtifactSpec(kind, path), test=Step("true"))


@pytest.fixture
def tree(tmp_path):
    path = tmp_path / "tree"
    path.mkdir()
    return path


# --- Android ---------------------------------------------------------------------------------------


def test_an_apk_is_packaged_with_what_its_manifest_says(tree, tmp_path):
    make_apk(tree / "app-debug.apk", axml(MANIFEST))
    (tree / "build").mkdir()

    artifact = package(tree, recipe("apk", "app-debug.apk"), tmp_path / "out", "player")

    assert artifact.content_type == "application/vnd.android.package-archive"
    assert artifact.filename == "app-debug.apk"
    assert artifact.size == (tree / "app-debug.apk").stat().st_size
    assert artifact.sha256 == hashlib.sha256((tree / "app-debug.apk").read_bytes()).hexdigest()
    assert artifact.metadata == {
        "package": "com.example.player",
        "version_name": "1.4.2",
        "version_code": 42,
        "min_sdk": 24,
        "target_sdk": 34,
    }  # the label and icon are references into a resources.arsc this APK does not have: left out


def test_an_apk_manifest_with_a_utf8_string_pool_and_a_plain_label_is_read(tmp_path):
    root = {"package": "org.example.notes", "android:versionCode": 7, "android:versionName": "0.7"}
    children = [("uses-sdk", {"android:minSdkVersion": 21}, []), ("application", {"android:label": "Notes"}, [])]
    manifest = ("manifest", root, children)
    metadata = read_apk(make_apk(tmp_path / "notes.apk", axml(manifest, utf8=True)))
    assert metadata == {"package": "org.example.notes", "version_name": "0.7", "version_code": 7, "min_sdk": 21,
                        "display_name": "Notes"}  # fmt: skip


def test_attribute_names_stripped_from_the_manifest_are_known_by_their_resource_ids(tmp_path):
    metadata = read_apk(make_apk(tmp_path / "shrunk.apk", axml(MANIFEST, strip_names=True)))
    assert (metadata["version_name"], metadata["version_code"], metadata["min_sdk"]) == ("1.4.2", 42, 24)


def test_an_apk_whose_manifest_cannot_be_read_is_still_packaged_and_says_so(tree, tmp_path):
    make_apk(tree / "app.apk", b"\x03\x00\x08\x00" + b"\xff" * 40)
    artifact = package(tree, recipe("apk", "app.apk"), tmp_path / "out", "player")
    assert "could not be fully read" in artifact.metadata["unreadable"]


def test_an_app_bundle_is_refused_because_phones_cannot_install_it(tree, tmp_path):
    make_apk(tree / "app-release.aab", None, {"base/manifest/AndroidManifest.xml": b"proto", "BundleConfig.pb": b""})
    with pytest.raises(UserError, match=r"Android App Bundle \(\.aab\).*Build an APK instead") as caught:
        package(tree, recipe("apk", "app-release.aab"), tmp_path / "out", "player")
    assert caught.value.code == "packaging_failed"

    (tree / "app-release.aab").rename(tree / "renamed.apk")
    with pytest.raises(UserError, match=r"Android App Bundle"):
        package(tree, recipe("apk", "renamed.apk"), tmp_path / "out", "player")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"not a zip at all", "is not a valid Android app"),
        (None, "has no AndroidManifest.xml"),
        (b'<?xml version="1.0"?><manifest package="x"/>', "plain text, not compiled"),
    ],
    ids=["not-a-zip", "no-manifest", "text-manifest"],
)
def test_files_that_are_not_installable_apks_are_refused(tree, tmp_path, content, message):
    if content == b"not a zip at all":
        (tree / "app.apk").write_bytes(content)
    else:
        make_apk(tree / "app.apk", content)
    with pytest.raises(UserError, match=message):
        package(tree, recipe("apk", "app.apk"), tmp_path / "out", "player")


# --- iOS -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [plistlib.FMT_BINARY, plistlib.FMT_XML], ids=["binary-plist", "xml-plist"])
def test_an_ipa_is_packaged_with_what_its_info_plist_says(tree, tmp_path, fmt):
    make_ipa(tree / "Player.ipa", fmt=fmt, files=ICONS)

    artifact = package(tree, recipe("ipa", "Player.ipa", "ios"), tmp_path / "out", "player")

    assert artifact.content_type == "application/octet-stream"
    assert artifact.metadata == {
        "bundle_id": "com.example.Player",
        "display_name": "Player",
        "version": "2.1",
        "build": "210.7",
        "min_os": "15.0",
        "executable": "Player",
        "icon_path": "Payload/Player.app/AppIcon60x60@3x.png",
        "icon_size": "180x180",
        "icon_cgbi": True,
    }


def test_a_plain_png_icon_travels_with_the_metadata(tmp_path):
    icon = png(1024, 1024)
    files = {"Payload/Player.app/AppIcon60x60@2x.png": png(120, 120), "Payload/Player.app/AppIcon76x76.png": icon}
    metadata = read_ipa(make_ipa(tmp_path / "Player.ipa", files=files))
    assert metadata["icon_path"] == "Payload/Player.app/AppIcon76x76.png"
    assert base64.b64decode(metadata["icon"]) == icon
    assert "icon_cgbi" not in metadata


def test_an_ipa_without_icons_or_display_name_gives_what_it_has(tmp_path):
    info = {"CFBundleIdentifier": "com.example.Bare", "CFBundleVersion": "1", "CFBundleName": "Bare",
            "CFBundleIconFiles": ["Icon"]}  # fmt: skip
    metadata = read_ipa(make_ipa(tmp_path / "Bare.ipa", info, files={"Payload/Player.app/Icon@2x.png": b"no png"}))
    assert metadata == {"bundle_id": "com.example.Bare", "display_name": "Bare", "build": "1",
                        "icon_path": "Payload/Player.app/Icon@2x.png"}  # fmt: skip


@pytest.mark.parametrize(
    "info, files, message",
    [
        (None, {}, r"exactly one Payload/<Name>.app/Info.plist \(found 0\)"),
        ({"CFBundleVersion": "1"}, {}, "no CFBundleIdentifier"),
        (INFO, {"Payload/Other.app/Info.plist": b"x"}, r"\(found 2\)"),
    ],
    ids=["no-plist", "no-bundle-id", "two-apps"],
)
def test_files_that_are_not_installable_ipas_are_refused(tree, tmp_path, info, files, message):
    make_ipa(tree / "App.ipa", info, files=files)
    with pytest.raises(UserError, match=message):
        package(tree, recipe("ipa", "App.ipa", "ios"), tmp_path / "out", "app")


def test_an_ipa_whose_info_plist_is_damaged_in_the_zip_is_refused(tmp_path):
    path = make_ipa(tmp_path / "App.ipa")
    data = bytearray(path.read_bytes())
    start = data.find(b"PK\x03\x04", data.find(b"Info.plist") - 60)
    data[start + 30 + len("Payload/Player.app/Info.plist") + 5] ^= 0xFF  # inside the compressed data
    path.write_bytes(bytes(data))
    with pytest.raises(AppError, match="Info.plist' is damaged in the archive"):
        read_ipa(path)


def test_a_damaged_info_plist_is_refused_in_plain_words(tmp_path):
    path = tmp_path / "App.ipa"
    with zipfile.ZipFile(path, "w") as ipa:
        ipa.writestr("Payload/App.app/Info.plist", b"bplist00\xff\xff\xff")
    with pytest.raises(AppError, match="Info.plist cannot be read"):
        read_ipa(path)


# --- packaging refuses what leads outside the workspace --------------------------------------------


def web_recipe() -> Recipe:
    return recipe("web", "dist", "web")


def test_a_dist_folder_that_is_a_link_is_refused(tree, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "index.html").write_text("<h1>not from the build</h1>")
    (tree / "dist").symlink_to(elsewhere)
    with pytest.raises(UserError, match="'dist' goes through a link"):
        package(tree, web_recipe(), tmp_path / "out", "app")


def test_a_link_to_etc_passwd_in_the_bundle_is_refused(tree, tmp_path):
    (tree / "dist").mkdir()
    (tree / "dist" / "index.html").write_text("<h1>hi</h1>")
    (tree / "dist" / "passwd.txt").symlink_to("/etc/passwd")
    with pytest.raises(UserError, match="'passwd.txt' is not a regular file"):
        package(tree, web_recipe(), tmp_path / "out", "app")


def test_a_fifo_in_the_bundle_is_refused_without_blocking(tree, tmp_path):
    (tree / "dist").mkdir()
    (tree / "dist" / "index.html").write_text("<h1>hi</h1>")
    os.mkfifo(tree / "dist" / "pipe")
    with pytest.raises(UserError, match="'pipe' is not a regular file"):
        package(tree, web_recipe(), tmp_path / "out", "app")


@pytest.mark.parametrize("make", ["fifo", "link"])
def test_a_single_file_artifact_must_be_a_regular_file(tree, tmp_path, make):
    (tree / "dist").mkdir()
    if make == "fifo":
        os.mkfifo(tree / "dist" / "app.apk")
    else:
        (tree / "dist" / "app.apk").symlink_to("/etc/passwd")
    with pytest.raises(UserError, match="goes through a link|should be one file"):
        package(tree, recipe("apk", "dist/app.apk"), tmp_path / "out", "app")


def test_a_web_bundle_is_packaged(tree, tmp_path):
    (tree / "dist" / "assets").mkdir(parents=True)
    (tree / "dist" / "index.html").write_text("<h1>hi</h1>")
    (tree / "dist" / "assets" / "app.js").write_text("console.log(1)")
    artifact = package(tree, web_recipe(), tmp_path / "out", "app")
    assert artifact.metadata == {"entry": "index.html", "files": 2}
    assert unpack_web(artifact.path, tmp_path / "served") == 2
    assert (tmp_path / "served" / "assets" / "app.js").read_text() == "console.log(1)"


# --- unpacking web bundles -------------------------------------------------------------------------


def bundle(tmp_path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]], name="bundle.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("index.html", b"<h1>hi</h1>")
        for info, data in entries:
            archive.writestr(info, data)
    return path


@pytest.mark.parametrize("name", ["../escape.txt", "assets/../../escape.txt", "/tmp/escape.txt", "..\\escape.txt",
                                  "assets\\..\\..\\escape.txt"])  # fmt: skip
def test_unpacking_refuses_paths_that_leave_the_folder(tmp_path, name):
    path = bundle(tmp_path, [(name, b"gotcha")])
    with pytest.raises(ValueError, match="unsafe path in bundle"):
        unpack_web(path, tmp_path / "site" / "served")
    assert not list(tmp_path.rglob("escape.txt"))


@pytest.mark.parametrize(
    "mode, message", [(stat.S_IFLNK | 0o777, "link in bundle"), (stat.S_IFIFO | 0o644, "special file in bundle")]
)
def test_unpacking_refuses_links_and_special_files(tmp_path, mode, message):
    info = zipfile.ZipInfo("passwd")
    info.external_attr = mode << 16
    path = bundle(tmp_path, [(info, b"/etc/passwd")])
    with pytest.raises(ValueError, match=message):
        unpack_web(path, tmp_path / "served")
    assert not (tmp_path / "served" / "passwd").exists()


def test_unpacking_refuses_a_bundle_that_declares_too_much(tmp_path):
    path = bundle(tmp_path, [("zeros.bin", b"\0" * 2_000_000)])
    assert path.stat().st_size < 10_000  # the bomb: tiny compressed, large unpacked
    with pytest.raises(ValueError, match="more than 1000000 bytes \\(by the sizes it declares\\)"):
        unpack_web(path, tmp_path / "served", max_bytes=1_000_000)
    assert not (tmp_path / "served").exists()


def _lie_about_size(path: Path, name: str, declared: int) -> None:
    """Rewrite the sizes the archive declares for `name` (local header and central directory)."""
    data = bytearray(path.read_bytes())
    encoded = name.encode()
    for signature, size_at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at : name_at + len(encoded)] == encoded:
                struct.pack_into("<I", data, start + size_at, declared)
            start += 4
    path.write_bytes(bytes(data))


def test_unpacking_refuses_an_entry_whose_declared_size_lies(tmp_path):
    path = bundle(tmp_path, [("zeros.bin", b"\0" * 2_000_000)])
    _lie_about_size(path, "zeros.bin", 100)
    assert zipfile.ZipFile(path).getinfo("zeros.bin").file_size == 100
    with pytest.raises(ValueError, match="the bundle is damaged at 'zeros.bin'"):
        unpack_web(path, tmp_path / "served", max_bytes=1_000_000)
    # Reading stops at the declared size: the lie never writes more than the archive admitted to.
    assert (tmp_path / "served" / "zeros.bin").stat().st_size <= 100


def test_unpacking_refuses_too_many_entries(tmp_path):
    path = bundle(tmp_path, [(f"f{n}.txt", b"x") for n in range(30)])
    with pytest.raises(ValueError, match="the bundle has 31 entries, more than 20"):
        unpack_web(path, tmp_path / "served", max_files=20)
    assert not (tmp_path / "served").exists()


def test_unpacking_something_that_is_not_a_zip_says_so(tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"<html>not a zip</html>")
    with pytest.raises(ValueError, match="not a zip archive"):
        unpack_web(path, tmp_path / "served")


def test_an_in_memory_round_trip_keeps_nested_folders(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/b/c/deep.txt", b"deep")
        archive.writestr("a/", b"")
    (tmp_path / "nested.zip").write_bytes(buffer.getvalue())
    assert unpack_web(tmp_path / "nested.zip", tmp_path / "served") == 2
    assert (tmp_path / "served" / "a" / "b" / "c" / "deep.txt").read_bytes() == b"deep"
