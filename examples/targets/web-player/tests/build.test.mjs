import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { build, stampVersion } from "../build.mjs";
import { tracks } from "../src/tracks.js";
import { readWavInfo } from "../tools/synth.mjs";

const version = JSON.parse(readFileSync(new URL("../package.json", import.meta.url))).version;
let out;
let manifest;

before(async () => {
  out = mkdtempSync(path.join(tmpdir(), "web-player-"));
  manifest = await build(out);
});

after(() => rmSync(out, { recursive: true, force: true }));

function read(file) {
  return readFileSync(path.join(out, file), "utf8");
}

// Follows every relative `import ... from "./x.js"` starting at app.js.
function moduleGraph(entry) {
  const seen = new Set();
  const pending = [entry];
  while (pending.length) {
    const file = pending.pop();
    if (seen.has(file)) continue;
    seen.add(file);
    assert.ok(existsSync(path.join(out, file)), `${file} is imported but missing from the build`);
    for (const [, spec] of read(file).matchAll(/(?:import|export)\s[^"']*?from\s+["'](\.[^"']+)["']/g)) {
      pending.push(path.posix.join(path.posix.dirname(file), spec));
    }
  }
  return seen;
}

test("the page and everything it links to are in the build", () => {
  const html = read("index.html");
  const links = [...html.matchAll(/(?:src|href)="([^"#:]+?)(?:\?[^"]*)?"/g)].map((match) => match[1]);
  assert.ok(links.includes("styles.css") && links.includes("app.js"));
  for (const link of links) assert.ok(existsSync(path.join(out, link)), `${link} is missing`);
});

test("every module the app imports is in the build", () => {
  const modules = moduleGraph("app.js");
  assert.ok(modules.has("tracks.js") && modules.has("playlist.js") && modules.has("time.js"));
});

test("the page carries the version from package.json", () => {
  const html = read("index.html");
  assert.match(html, new RegExp(`<meta name="app-version" content="${version.replaceAll(".", "\\.")}">`));
  assert.match(html, new RegExp(`src="app\\.js\\?v=${version.replaceAll(".", "\\.")}"`));
  assert.equal(manifest.version, version);
});

test("every track has an audio file as long as the list says", () => {
  for (const track of tracks) {
    const info = readWavInfo(readFileSync(path.join(out, track.src)));
    assert.equal(info.duration, track.duration, track.id);
  }
});

test("the manifest lists each file with its size", () => {
  const listed = JSON.parse(read("manifest.json"));
  assert.equal(listed.entry, "index.html");
  for (const file of listed.files) {
    assert.equal(readFileSync(path.join(out, file.path)).length, file.bytes, file.path);
    assert.match(file.sha256, /^[0-9a-f]{64}$/);
  }
  assert.ok(listed.files.some((file) => file.path === "index.html"));
});

test("stampVersion leaves other links alone", () => {
  const html = '<link href="styles.css"><script src="app.js"></script><img src="cover.png">';
  assert.equal(
    stampVersion(html, "2.0.0"),
    '<link href="styles.css?v=2.0.0"><script src="app.js?v=2.0.0"></script><img src="cover.png">',
  );
});
