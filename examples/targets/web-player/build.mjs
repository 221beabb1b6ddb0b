// Builds the player into dist/: copies src/, stamps the version from
// package.json, renders the demo songs and writes an asset manifest.
// Plain Node, no dependencies:  node build.mjs [outDir]
import { createHash } from "node:crypto";
import { copyFile, mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { tracks } from "./src/tracks.js";
import { encodeWav, renderTune } from "./tools/synth.mjs";

const root = path.dirname(fileURLToPath(import.meta.url));

async function listFiles(dir, base = dir) {
  const files = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(full, base)));
    else files.push(path.relative(base, full).split(path.sep).join("/"));
  }
  return files.sort();
}

// The version goes into a meta tag and onto the CSS and JS links, so a new
// build is never served from a stale browser cache.
export function stampVersion(html, version) {
  return html
    .replace(/(<meta name="app-version" content=")[^"]*(")/, `$1${version}$2`)
    .replace(/(href="styles\.css|src="app\.js)"/g, `$1?v=${version}"`);
}

export async function build(outDir = path.join(root, "dist")) {
  const { name, version } = JSON.parse(await readFile(path.join(root, "package.json"), "utf8"));

  await rm(outDir, { recursive: true, force: true });
  await mkdir(outDir, { recursive: true });
  for (const file of await listFiles(path.join(root, "src"))) {
    await mkdir(path.dirname(path.join(outDir, file)), { recursive: true });
    await copyFile(path.join(root, "src", file), path.join(outDir, file));
  }

  // The live app's server (server.mjs) runs from the bundle: `node server.mjs` in [serve].
  await copyFile(path.join(root, "server.mjs"), path.join(outDir, "server.mjs"));

  const indexPath = path.join(outDir, "index.html");
  await writeFile(indexPath, stampVersion(await readFile(indexPath, "utf8"), version));

  for (const track of tracks) {
    const file = path.join(outDir, track.src);
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, encodeWav(renderTune(track.id, track.duration)));
  }

  const files = [];
  for (const file of await listFiles(outDir)) {
    const data = await readFile(path.join(outDir, file));
    files.push({ path: file, bytes: data.length, sha256: createHash("sha256").update(data).digest("hex") });
  }
  const manifest = { name, version, entry: "index.html", files };
  await writeFile(path.join(outDir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const outDir = path.resolve(process.argv[2] ?? path.join(root, "dist"));
  const manifest = await build(outDir);
  const bytes = manifest.files.reduce((sum, file) => sum + file.bytes, 0);
  console.log(
    `Built ${manifest.name} ${manifest.version}: ${manifest.files.length} files, ` +
      `${Math.round(bytes / 1024)} KB in ${path.relative(process.cwd(), outDir) || "."}/`,
  );
}
