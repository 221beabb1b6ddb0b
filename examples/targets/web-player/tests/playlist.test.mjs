import assert from "node:assert/strict";
import { test } from "node:test";

import { Playlist, RESTART_AFTER } from "../src/playlist.js";
import { tracks } from "../src/tracks.js";

const three = [{ title: "One" }, { title: "Two" }, { title: "Three" }];

test("a playlist starts at its first track", () => {
  assert.equal(new Playlist(three).current.title, "One");
});

test("a playlist needs at least one track", () => {
  assert.throws(() => new Playlist([]), /at least one track/);
});

test("next moves forward and wraps around when looping", () => {
  const playlist = new Playlist(three);
  assert.equal(playlist.next().title, "Two");
  assert.equal(playlist.next().title, "Three");
  assert.equal(playlist.next().title, "One");
});

test("next returns null at the end when not looping", () => {
  const playlist = new Playlist(three, { loop: false });
  playlist.select(2);
  assert.equal(playlist.hasNext(), false);
  assert.equal(playlist.next(), null);
  assert.equal(playlist.current.title, "Three");
});

test("previous goes back early in a track and wraps to the end", () => {
  const playlist = new Playlist(three);
  assert.equal(playlist.previous(0).title, "Three");
  assert.equal(playlist.previous(1).title, "Two");
});

test("previous restarts the track once it has played a few seconds", () => {
  const playlist = new Playlist(three);
  playlist.select(1);
  assert.equal(playlist.previous(RESTART_AFTER + 1).title, "Two");
  assert.equal(playlist.index, 1);
});

test("select refuses positions outside the playlist", () => {
  const playlist = new Playlist(three);
  assert.equal(playlist.select(2).title, "Three");
  assert.throws(() => playlist.select(3), RangeError);
  assert.throws(() => playlist.select(-1), RangeError);
});

test("every track has what the player shows", () => {
  const ids = new Set();
  for (const track of tracks) {
    assert.ok(track.title && track.artist, `${track.id} needs a title and an artist`);
    assert.ok(Number.isInteger(track.duration) && track.duration > 0, `${track.id} needs a duration`);
    assert.match(track.src, /^audio\/[a-z0-9-]+\.wav$/);
    assert.equal(track.colors.length, 2);
    assert.ok(!ids.has(track.id), `duplicate track id ${track.id}`);
    ids.add(track.id);
  }
});
