"""Android built here: the example hybrid app (examples/targets/field-notes-android) assembled from source in
the real sandbox with Debian's smali, aapt and zipalign; signed afterwards on the host with a key the
sandbox never sees; its metadata read with androguard and checked against `aapt dump badging`; its web
part packaged as a web preview; and a Gradle project with a stand-in `./gradlew` built the same way with
a company's Android SDK mounted as a toolchain. No Django."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from agents import BuildSpec, build
from agents.apksign import SigningKey, debug_key, sign_apk, verify_apk
from agents.appmeta import read_apk
from agents.packaging import package, package_web_part
from agents.providers import ProviderConfig
from agents.recipe import RecipeError, parse_recipe
from agents.sandbox.bwrap import BwrapSandbox
from tests.agents.sinks import Sink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "targets" / "field-notes-android"
TOOLS = ("aapt", "apksigner", "zipalign", "smali", "keytool")
pytestmark = pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in TOOLS),
    reason=f"needs {', '.join(TOOLS)} (scripts/system-deps.sh installs them)",
)


def badging(apk: Path) -> dict:
    """What `aapt dump badging` says: the reference the metadata is checked against."""
    out = subprocess.run(["aapt", "dump", "badging", str(apk)], capture_output=True, text=True, check=True).stdout
    package = re.search(r"^package: name='([^']*)' versionCode='([^']*)' versionName='([^']*)'", out, re.M)
    icons = re.findall(r"^application-icon-(\d+):'([^']*)'", out, re.M)
    return {
        "package": package.group(1),
        "version_code": int(package.group(2)),
        "version_name": package.group(3),
        "min_sdk": int(re.search(r"^sdkVersion:'(\d+)'", out, re.M).group(1)),
        "target_sdk": int(re.search(r"^targetSdkVersion:'(\d+)'", out, re.M).group(1)),
        "display_name": re.search(r"^application-label:'([^']*)'", out, re.M).group(1),
        "icon_path": max(icons, key=lambda pair: int(pair[0]))[1],  # the densest, as a launcher picks
    }


def apksigner_accepts(apk: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["apksigner", "verify", "-v", str(apk)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def built_tree(scratch_dir):
    """The example built by its own recipe's [build] in the real bubblewrap sandbox."""
    tree = scratch_dir("field-notes-")
    shutil.copytree(EXAMPLE, tree, dirs_exist_ok=True, ignore=shutil.ignore_patterns("build", "dist"))
    subprocess.run(["chmod", "-R", "a+rwX", str(tree)], check=True)
    recipe = parse_recipe((EXAMPLE / "prototype.toml").read_text())
    result = BwrapSandbox(tree).run(["sh", "-c", recipe.build.command], timeout=recipe.build.timeout)
    assert result.exit_code == 0, f"the example's build failed in the sandbox:\n{result.output}"
    return tree


@pytest.fixture(scope="module")
def store_key(scratch_dir):
    return debug_key(scratch_dir("key-"))


# --- the example builds in the sandbox ------------------------------------------------------------


def test_the_sandboxed_build_gives_an_unsigned_apk_that_aapt_reads(built_tree):
    apk = built_tree / "dist" / "field-notes.apk"
    assert apksigner_accepts(apk).returncode != 0, "the sandbox should not be able to sign: no key is there"
    assert badging(apk) == {
        "package": "com.example.fieldnotes", "version_code": 1, "version_name": "1.0", "min_sdk": 21,
        "target_sdk": 34, "display_name": "Field Notes", "icon_path": "res/drawable/icon.png",
    }  # fmt: skip
    with zipfile.ZipFile(apk) as archive:
        names = set(archive.namelist())
    assert {"classes.dex", "resources.arsc", "assets/www/index.html", "assets/www/notes.js"} <= names


def test_the_example_own_tests_pass_in_the_sandbox(built_tree):
    recipe = parse_recipe((EXAMPLE / "prototype.toml").read_text())
    result = BwrapSandbox(built_tree).run(["sh", "-c", recipe.test.command], timeout=recipe.test.timeout)
    assert result.exit_code == 0, result.output
    assert re.search(r"^# pass (\d+)", result.output, re.M).group(1) != "0", result.output


# --- signing on the host --------------------------------------------------------------------------


def test_packaging_signs_the_apk_so_apksigner_accepts_it_and_reads_what_aapt_reads(built_tree, store_key, scratch_dir):
    recipe = parse_recipe((EXAMPLE / "prototype.toml").read_text())
    artifact = package(built_tree, recipe, scratch_dir("out-"), "field-notes-android", signing_key=store_key)

    checked = apksigner_accepts(artifact.path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in checked.stdout
    meta = artifact.metadata
    assert {key: meta[key] for key in badging(artifact.path)} == badging(artifact.path)
    assert meta["signed_with"] == "debug" and meta["signature_schemes"][:3] == ["v1", "v2", "v3"]
    assert meta["signer"] == "CN=Prototype Store debug key, O=Prototype Store"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["signer_sha256"])
    with zipfile.ZipFile(artifact.path) as archive:
        assert base64.b64decode(meta["icon"]) == archive.read("res/drawable/icon.png")
    assert artifact.filename == "field-notes.apk" and artifact.content_type == "application/vnd.android.package-archive"


def test_the_store_debug_key_is_made_once_even_when_workers_ask_at_the_same_time(scratch_dir):
    folder = scratch_dir("key-race-")
    keys: list[SigningKey] = []
    threads = [threading.Thread(target=lambda: keys.append(debug_key(folder))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 4 and len({(k.keystore, k.store_password) for k in keys}) == 1
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "debug.p12", "debug.password"]
    assert (folder / "debug.p12").stat().st_mode & 0o077 == 0, "the keystore must be private to the store"


def test_a_company_keystore_signs_with_the_company_certificate(built_tree, scratch_dir):
    folder = scratch_dir("company-")
    subprocess.run(
        ["keytool", "-genkeypair", "-keystore", str(folder / "company.jks"), "-storetype", "JKS", "-alias", "release",
         "-keyalg", "RSA", "-keysize", "2048", "-validity", "365", "-dname", "CN=Example Corp, O=Example",
         "-storepass", "store-secret", "-keypass", "key-secret", "-noprompt"],
        check=True, capture_output=True,
    )  # fmt: skip
    apk = folder / "app.apk"
    shutil.copy(built_tree / "dist" / "field-notes.apk", apk)
    sign_apk(apk, SigningKey(folder / "company.jks", "release", "store-secret", "key-secret"))
    assert verify_apk(apk)["signer"] == "CN=Example Corp, O=Example"


def test_a_wrong_password_fails_without_printing_it(built_tree, store_key, scratch_dir):
    from agents.apksign import SigningError

    apk = scratch_dir("bad-") / "app.apk"
    shutil.copy(built_tree / "dist" / "field-notes.apk", apk)
    with pytest.raises(SigningError) as caught:
        sign_apk(apk, SigningKey(store_key.keystore, store_key.alias, "not-the-password-xyz"))
    assert "not-the-password-xyz" not in str(caught.value)
    assert apksigner_accepts(apk).returncode != 0


def test_the_signing_key_is_not_visible_inside_the_sandbox(built_tree, store_key):
    folder = store_key.keystore.parent
    result = BwrapSandbox(built_tree).run(
        ["sh", "-c", f"ls -la {folder} {store_key.keystore}; cat {store_key.keystore} | wc -c"], timeout=30
    )
    assert "No such file or directory" in result.output, result.output
    assert store_key.store_password not in result.output


# --- the web part ---------------------------------------------------------------------------------


def test_the_web_part_is_packaged_as_a_web_preview_beside_the_apk(built_tree, scratch_dir):
    recipe = parse_recipe((EXAMPLE / "prototype.toml").read_text())
    web = package_web_part(built_tree, recipe, scratch_dir("web-"), "field-notes-android")
    assert web is not None and web.kind == "web"
    assert web.metadata == {"entry": "index.html", "files": 4, "web_part_of": "apk"}
    with zipfile.ZipFile(web.path) as bundle, zipfile.ZipFile(built_tree / "dist" / "field-notes.apk") as apk:
        assert sorted(bundle.namelist()) == ["app.js", "index.html", "notes.js", "styles.css"]
        for name in bundle.namelist():  # the very files the APK's WebView shows
            assert bundle.read(name) == apk.read(f"assets/www/{name}"), name


@pytest.mark.parametrize(
    "artifact, problem",
    [
        ('kind = "web"\npath = "dist"\nweb_preview = "www"', "'web_preview' is for an app's web part"),
        ('kind = "apk"\npath = "app.apk"\nweb_preview = "../www"', "must be a path inside the repository"),
        ('kind = "apk"\npath = "app.apk"\nweb_preview = 3', "must be a non-empty text"),
    ],
    ids=["web-artifact", "outside", "not-text"],
)
def test_a_web_preview_key_that_makes_no_sense_is_refused_naming_the_key(artifact, problem):
    kind = "web" if 'kind = "web"' in artifact else "android"
    text = f'[prototype]\nname = "X"\nkind = "{kind}"\n\n[test]\ncommand = "true"\n\n[artifact]\n{artifact}\n'
    with pytest.raises(RecipeError, match=re.escape(problem)) as caught:
        parse_recipe(text)
    assert caught.value.key == "artifact.web_preview"


def test_androguard_reads_a_gradle_built_apk_as_aapt_does(scratch_dir):
    """A real APK built by Google's Gradle toolchain (npm's android-apidemos ships one), so the reader is
    checked on aapt2 output and a resource table with many densities, not only on the example's."""
    folder = scratch_dir("apidemos-")
    fetched = subprocess.run(
        ["npm", "pack", "android-apidemos@5.0.0", "--pack-destination", str(folder)],
        capture_output=True, text=True, timeout=180, cwd=folder,
    )  # fmt: skip
    if fetched.returncode != 0:
        pytest.skip(f"npm could not fetch android-apidemos (no registry here?): {fetched.stderr[-300:]}")
    subprocess.run(["tar", "-xzf", next(folder.glob("*.tgz")).name], cwd=folder, check=True)
    apk = folder / "package" / "apks" / "ApiDemos-debug.apk"
    meta = read_apk(apk)
    expected = badging(apk)
    assert {key: meta[key] for key in expected} == expected
    assert expected["package"] == "io.appium.android.apis"


# --- whole builds: the agent's change, then the Gradle route ----------------------------------------


def test_a_replayed_idea_changes_the_app_and_gives_a_signed_apk_and_its_web_part(make_repo, scratch_dir, store_key):
    repo = make_repo(source=EXAMPLE)
    work = scratch_dir("build-")
    spec = BuildSpec(
        target="field-notes-android", repo_url=str(repo), base_ref="main", idea="Show when each note was taken",
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out",
        result_ref="refs/prototypes/test/1", provider=ProviderConfig(name="replay", recordings=EXAMPLES / "recordings"),
        apk_signing_key=store_key, secrets=(store_key.store_password,),
    )  # fmt: skip
    sink = Sink()
    result = build(spec, sink)

    assert result.error is None, (result.error.code, result.error.detail)
    apk, web = result.artifacts
    assert (apk.kind, web.kind) == ("apk", "web")
    assert apksigner_accepts(apk.path).returncode == 0
    with zipfile.ZipFile(apk.path) as archive:
        assert "function formatWhen" in archive.read("assets/www/notes.js").decode()
    with zipfile.ZipFile(web.path) as bundle:
        assert "formatWhen(note.at)" in bundle.read("app.js").decode()
    assert any("formatWhen" in test["name"] for test in result.verify["tests"]), result.verify
    assert store_key.store_password not in json.dumps(sink.events)
    assert [data["kind"] for kind, data in sink.events if kind == "artifact"] == ["apk", "web"]


STAND_IN_GRADLEW = r"""#!/bin/sh
# STAND-IN for the Gradle wrapper, for tests only: Gradle and Google's SDK cannot be installed on these
# machines. Like the real ./gradlew it reads the SDK from ANDROID_HOME (a toolchain the store mounts)
# and writes app/build/outputs/apk/debug/app-debug.apk; it builds that APK with the same smali/aapt
# steps as the field-notes example, and `test` runs the app's Node tests.
set -eu
: "${ANDROID_HOME:?ANDROID_HOME is not set: the recipe points it at the mounted SDK toolchain}"
grep -q '^Pkg.Revision=34' "$ANDROID_HOME/platforms/android-34/source.properties"
case "$1" in
  assembleDebug)
    out=app/build/outputs/apk/debug
    rm -rf app/build && mkdir -p app/build/assets "$out"
    cp -R app/src/main/assets/www app/build/assets/www
    smali assemble --api 21 -o app/build/classes.dex app/src/main/smali
    aapt package -f -M app/src/main/AndroidManifest.xml -S app/src/main/res -A app/build/assets \
      -I /usr/share/android-framework-res/framework-res.apk -F app/build/unsigned.apk
    (cd app/build && aapt add unsigned.apk classes.dex >/dev/null)
    zipalign -f -p 4 app/build/unsigned.apk "$out/app-debug.apk"
    echo "BUILD SUCCESSFUL (stand-in gradlew)";;
  test) node --test --test-reporter=tap;;
  *) echo "stand-in gradlew knows assembleDebug and test, not $1" >&2; exit 2;;
esac
"""

GRADLE_RECIPE = """\
[prototype]
name = "Field Notes (Gradle)"
kind = "android"

[toolchain]
android-sdk = "34"

[build]
command = "ANDROID_HOME=/opt/toolchains/android-sdk/34 ./gradlew assembleDebug --offline"

[test]
command = "ANDROID_HOME=/opt/toolchains/android-sdk/34 ./gradlew test --offline"

[artifact]
kind = "apk"
path = "app/build/outputs/apk/debug/app-debug.apk"
web_preview = "app/src/main/assets/www"
"""


def test_a_gradle_project_builds_with_gradlew_and_the_sdk_toolchain_in_the_same_pipeline(
    make_repo, scratch_dir, store_key
):
    layout = scratch_dir("gradle-src-")
    main = layout / "app" / "src" / "main"
    shutil.copytree(EXAMPLE / "smali", main / "smali")
    shutil.copytree(EXAMPLE / "res", main / "res")
    shutil.copytree(EXAMPLE / "www", main / "assets" / "www")
    shutil.copy(EXAMPLE / "AndroidManifest.xml", main / "AndroidManifest.xml")
    shutil.copytree(EXAMPLE / "tests", layout / "tests")
    (layout / "tests" / "shell.test.js").unlink()  # it checks the example's own layout
    for test in (layout / "tests").iterdir():
        test.write_text(test.read_text().replace('"../www/', '"../app/src/main/assets/www/'))
    (layout / "gradlew").write_text(STAND_IN_GRADLEW)
    (layout / "gradlew").chmod(0o755)
    (layout / "prototype.toml").write_text(GRADLE_RECIPE)
    repo = make_repo(source=layout)
    toolchains = scratch_dir("toolchains-")
    platform = toolchains / "android-sdk" / "34" / "platforms" / "android-34"
    platform.mkdir(parents=True)
    (platform / "source.properties").write_text("Pkg.Desc=Android SDK Platform 34 (stand-in)\nPkg.Revision=34\n")
    subprocess.run(["chmod", "-R", "a+rX", str(toolchains)], check=True)
    recordings = scratch_dir("recordings-")
    (recordings / "field-notes-gradle").mkdir()
    (recordings / "field-notes-gradle" / "as-is.json").write_text(
        json.dumps(_rename_the_app("Call the app Gradle Notes"))
    )
    work = scratch_dir("build-")
    spec = BuildSpec(
        target="field-notes-gradle", repo_url=str(repo), base_ref="main", idea="Call the app Gradle Notes",
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out",
        result_ref="refs/prototypes/test/1", provider=ProviderConfig(name="replay", recordings=recordings),
        toolchain_root=toolchains, apk_signing_key=store_key,
    )  # fmt: skip
    sink = Sink()
    result = build(spec, sink)

    assert result.error is None, (result.error.code, result.error.detail, "\n".join(map(str, sink.events[-8:])))
    apk, web = result.artifacts
    assert apk.filename == "app-debug.apk" and web.kind == "web"
    assert apksigner_accepts(apk.path).returncode == 0
    assert badging(apk.path)["package"] == apk.metadata["package"] == "com.example.fieldnotes"
    assert badging(apk.path)["display_name"] == apk.metadata["display_name"] == "Gradle Notes"  # the change
    assert ("log", {"text": "Toolchains: android-sdk 34 (/opt/toolchains/android-sdk/34)."}) in sink.events
    assert result.verify["counts"]["passed"] >= 6, result.verify


def _rename_the_app(idea: str) -> dict:
    """A sample conversation (written here, not recorded): rename the app, verify, finish."""

    def message(n, tool, payload):
        return {
            "id": f"msg_sample_{n}", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
            "content": [{"type": "tool_use", "id": f"toolu_sample_{n}", "name": tool, "input": payload}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 10, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
        }  # fmt: skip

    rename = {"command": "str_replace", "path": "app/src/main/res/values/strings.xml",
              "old_str": ">Field Notes<", "new_str": ">Gradle Notes<"}  # fmt: skip
    return {
        "format": 1, "target": "field-notes-gradle", "idea": idea, "title": idea, "summary": idea,
        "model": "claude-sonnet-5-5",
        "responses": [message(1, "str_replace_based_edit_tool", rename), message(2, "verify", {}),
                      message(3, "finish", {"summary": "The app is called Gradle Notes."})],
    }  # fmt: skip


def test_a_key_that_cannot_sign_fails_the_packaging_as_our_fault_and_keeps_no_unsigned_apk(built_tree, scratch_dir):
    from agents.errors import ServiceError

    recipe = parse_recipe((EXAMPLE / "prototype.toml").read_text())
    out = scratch_dir("out-")
    broken = SigningKey(out / "missing.p12", "release", "whatever")
    with pytest.raises(ServiceError) as caught:
        package(built_tree, recipe, out, "field-notes-android", signing_key=broken)
    assert caught.value.code == "signing_failed" and caught.value.family == "ours"
    assert "could not be signed" in caught.value.detail
    assert not list(out.glob("*.apk")), "an unsigned APK must not be left to be published"
