import assert from "node:assert/strict";
import { test } from "node:test";

import { formatTime, progress } from "../src/time.js";

test("formatTime shows minutes and zero-padded seconds", () => {
  assert.equal(formatTime(0), "0:00");
  assert.equal(formatTime(7), "0:07");
  assert.equal(formatTime(65), "1:05");
  assert.equal(formatTime(599.9), "9:59");
});

test("formatTime adds hours for long durations", () => {
  assert.equal(formatTime(3600), "1:00:00");
  assert.equal(formatTime(3765), "1:02:45");
});

test("formatTime shows 0:00 for unknown or negative times", () => {
  assert.equal(formatTime(Number.NaN), "0:00");
  assert.equal(formatTime(Infinity), "0:00");
  assert.equal(formatTime(-3), "0:00");
});

test("progress is the played fraction, clamped to 0..1", () => {
  assert.equal(progress(15, 60), 0.25);
  assert.equal(progress(90, 60), 1);
  assert.equal(progress(-1, 60), 0);
});

test("progress is 0 until the duration is known", () => {
  assert.equal(progress(5, Number.NaN), 0);
  assert.equal(progress(5, 0), 0);
});
