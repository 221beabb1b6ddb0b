// The native shell and the web app must agree: the activity the manifest launches exists, and the
// page it loads is in www/ (bundled as assets/www by build.sh).
const test = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");

const root = path.join(__dirname, "..");
const read = (name) => fs.readFileSync(path.join(root, name), "utf8");

test("the manifest's launcher activity is the smali MainActivity", () => {
  const manifest = read("AndroidManifest.xml");
  const pkg = manifest.match(/package="([^"]+)"/)[1];
  assert.match(manifest, /android:name="\.MainActivity"/);
  const smali = read(`smali/${pkg.replaceAll(".", "/")}/MainActivity.smali`);
  assert.match(smali, new RegExp(`^\\.class public L${pkg.replaceAll(".", "/")}/MainActivity;`, "m"));
});

test("the page the activity loads is in www/", () => {
  const smali = read("smali/com/example/fieldnotes/MainActivity.smali");
  const url = smali.match(/"file:\/\/\/android_asset\/(www\/[^"]+)"/)[1];
  assert.ok(fs.existsSync(path.join(root, url)), `${url} is missing`);
});

test("the page loads its scripts as classic scripts (WebView refuses modules from file://)", () => {
  const html = read("www/index.html");
  assert.doesNotMatch(html, /type="module"/);
  for (const [, src] of html.matchAll(/<script src="([^"]+)"/g)) {
    assert.ok(fs.existsSync(path.join(root, "www", src)), `www/${src} is missing`);
  }
});
