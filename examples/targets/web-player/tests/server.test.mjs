import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import { apiTarget, createServer, siteFile } from "../server.mjs";

let site;
let api;
let player;
let base;

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

before(async () => {
  site = mkdtempSync(path.join(tmpdir(), "web-player-site-"));
  writeFileSync(path.join(site, "index.html"), "<h1>Player</h1>");
  api = http.createServer((request, response) => {
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ path: request.url, episodes: [] }));
  });
  const apiPort = await listen(api);
  player = createServer({ root: site, apiUrl: `http://127.0.0.1:${apiPort}` });
  base = `http://127.0.0.1:${await listen(player)}`;
});

after(() => {
  player.close();
  api.close();
  rmSync(site, { recursive: true, force: true });
});

test("the site is served, and /api/* is passed on to the API", async () => {
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.equal(await page.text(), "<h1>Player</h1>");
  const answer = await fetch(`${base}/api/episodes?show=x`);
  assert.deepEqual(await answer.json(), { path: "/episodes?show=x", episodes: [] });
});

test("an API that does not answer gives a plain 502", async () => {
  const lonely = createServer({ root: site, apiUrl: "http://127.0.0.1:9" });
  const url = `http://127.0.0.1:${await listen(lonely)}`;
  const answer = await fetch(`${url}/api/episodes`);
  lonely.close();
  assert.equal(answer.status, 502);
  assert.match((await answer.json()).error, /unreachable/);
});

test("no file outside the site, no hidden file and not the server itself", () => {
  assert.equal(siteFile("/site", "/../etc/passwd"), null);
  assert.equal(siteFile("/site", "/%2e%2e/secret"), null);
  assert.equal(siteFile("/site", "/.env"), null);
  assert.equal(siteFile("/site", "/server.mjs"), null);
  assert.equal(siteFile("/site", "/"), path.join("/site", "index.html"));
});

test("without PODCAST_API_URL there is no API to reach", () => {
  assert.equal(apiTarget("", "/api/episodes"), null);
  assert.equal(apiTarget("http://127.0.0.1:41000", "/api/episodes").href, "http://127.0.0.1:41000/episodes");
});
