const test = require("node:test");
const assert = require("node:assert/strict");
const { MAX_TEXT, makeNote, newestFirst, parseNotes, openStore, countLabel } = require("../www/notes.js");

const now = new Date("2026-05-01T09:30:00Z");

test("makeNote keeps the text and the place, trimmed, with the time", () => {
  assert.deepEqual(makeNote("  a heron  ", " pond ", now), { text: "a heron", place: "pond", at: "2026-05-01T09:30:00.000Z" });
});

test("makeNote keeps nothing for an empty note", () => {
  assert.equal(makeNote("   ", "pond", now), null);
  assert.equal(makeNote(undefined, "", now), null);
});

test("makeNote cuts a note at MAX_TEXT characters", () => {
  assert.equal(makeNote("x".repeat(MAX_TEXT + 20), "", now).text.length, MAX_TEXT);
});

test("newestFirst sorts by time without changing the list", () => {
  const notes = [{ text: "a", at: "2026-01-01" }, { text: "b", at: "2026-03-01" }, { text: "c", at: "2026-02-01" }];
  assert.deepEqual(newestFirst(notes).map((n) => n.text), ["b", "c", "a"]);
  assert.deepEqual(notes.map((n) => n.text), ["a", "b", "c"]);
});

test("parseNotes reads stored notes and ignores anything broken", () => {
  assert.deepEqual(parseNotes('[{"text":"a","at":"x"},{"nope":1},null]'), [{ text: "a", at: "x" }]);
  assert.deepEqual(parseNotes("not json"), []);
  assert.deepEqual(parseNotes('{"text":"a"}'), []);
  assert.deepEqual(parseNotes(null), []);
});

test("countLabel says how many notes there are", () => {
  assert.equal(countLabel(0), "0 notes");
  assert.equal(countLabel(1), "1 note");
  assert.equal(countLabel(3), "3 notes");
});

test("openStore keeps notes in the page's storage when it may", () => {
  const saved = new Map();
  const storage = { getItem: (k) => saved.get(k) ?? null, setItem: (k, v) => saved.set(k, v) };
  const store = openStore(() => storage);
  store.set("k", "v");
  assert.equal(store.persistent, true);
  assert.equal(saved.get("k"), "v");
  assert.equal(store.get("k"), "v");
});

test("openStore keeps notes in memory where storage is refused", () => {
  const store = openStore(() => {
    throw new Error("SecurityError: the document is sandboxed");
  });
  assert.equal(store.persistent, false);
  assert.equal(store.get("k"), null);
  store.set("k", "v");
  assert.equal(store.get("k"), "v");
});
