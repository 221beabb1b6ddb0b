import assert from "node:assert/strict";
import { test } from "node:test";

import { episodeDetails, loadEpisodes } from "../src/episodes.js";

function answer(status, body, type = "application/json") {
  return async () => new Response(typeof body === "string" ? body : JSON.stringify(body), {
    status,
    headers: { "content-type": type },
  });
}

test("episodes from the API are listed", async () => {
  const episodes = [{ id: 1, title: "Code Review Without Tears", published: "2024-03-04", duration_seconds: 1520 }];
  assert.deepEqual(await loadEpisodes(answer(200, { episodes })), { state: "ok", episodes });
});

test("without the player's server (a static preview) the section stays hidden", async () => {
  assert.deepEqual(await loadEpisodes(answer(404, "<h1>Not found</h1>", "text/html")), { state: "none" });
  assert.deepEqual(await loadEpisodes(async () => { throw new TypeError("Failed to fetch"); }), { state: "none" });
});

test("an unreachable API is said in plain words", async () => {
  const down = await loadEpisodes(answer(502, { error: "The podcast API is unreachable (connect ECONNREFUSED)." }));
  assert.equal(down.state, "error");
  assert.match(down.message, /unreachable/);
  assert.match((await loadEpisodes(answer(500, {}))).message, /answered 500/);
});

test("an episode's details are its date and length", () => {
  assert.equal(episodeDetails({ published: "2024-03-04", duration_seconds: 1520 }), "2024-03-04 · 25:20");
});
