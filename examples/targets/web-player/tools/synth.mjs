// Makes the demo songs: short, gentle tunes rendered as 8-bit mono WAV, so the
// player works offline and the repository holds no binary files. The same
// track id always gives the same tune.

export const SAMPLE_RATE = 8000;

const PENTATONIC = [0, 2, 4, 7, 9, 12, 14, 16];

// A small deterministic random generator (mulberry32), seeded from the id.
function randomFor(text) {
  let seed = 0;
  for (const char of text) seed = (Math.imul(seed, 31) + char.charCodeAt(0)) >>> 0;
  return () => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function frequency(semitonesFromA4) {
  return 440 * 2 ** (semitonesFromA4 / 12);
}

function addNote(samples, start, length, freq, volume) {
  const from = Math.floor(start * SAMPLE_RATE);
  const to = Math.min(samples.length, Math.floor((start + length) * SAMPLE_RATE));
  for (let i = from; i < to; i++) {
    const t = (i - from) / SAMPLE_RATE;
    const envelope = Math.min(1, t * 200) * Math.exp(-3 * t);
    const wave = Math.sin(2 * Math.PI * freq * t) + 0.3 * Math.sin(4 * Math.PI * freq * t);
    samples[i] += volume * envelope * wave;
  }
}

// Returns the track's samples as numbers between -1 and 1.
export function renderTune(id, seconds) {
  const random = randomFor(id);
  const samples = new Float32Array(Math.round(seconds * SAMPLE_RATE));
  const root = -9 + Math.floor(random() * 7); // somewhere between C4 and F#4
  const beat = 60 / (84 + Math.floor(random() * 40));
  let degree = 2;
  for (let start = 0, step = 0; start < seconds; start += beat / 2, step++) {
    if (step % 8 === 0) addNote(samples, start, beat * 4, frequency(root - 24), 0.35);
    if (random() < 0.2) continue; // a rest now and then
    degree = Math.max(0, Math.min(PENTATONIC.length - 1, degree + Math.floor(random() * 5) - 2));
    addNote(samples, start, beat * 2, frequency(root + PENTATONIC[degree]), 0.25);
  }
  const fade = SAMPLE_RATE; // one second in and out
  let peak = 0;
  for (let i = 0; i < samples.length; i++) {
    const edge = Math.min(i, samples.length - 1 - i);
    if (edge < fade) samples[i] *= edge / fade;
    peak = Math.max(peak, Math.abs(samples[i]));
  }
  if (peak > 0) for (let i = 0; i < samples.length; i++) samples[i] *= 0.8 / peak;
  return samples;
}

// Encodes samples (-1..1) as an unsigned 8-bit mono PCM WAV file.
export function encodeWav(samples, sampleRate = SAMPLE_RATE) {
  const wav = Buffer.alloc(44 + samples.length);
  wav.write("RIFF", 0, "ascii");
  wav.writeUInt32LE(36 + samples.length, 4);
  wav.write("WAVEfmt ", 8, "ascii");
  wav.writeUInt32LE(16, 16); // size of the fmt chunk
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // mono
  wav.writeUInt32LE(sampleRate, 24);
  wav.writeUInt32LE(sampleRate, 28); // bytes per second
  wav.writeUInt16LE(1, 32); // bytes per sample
  wav.writeUInt16LE(8, 34); // bits per sample
  wav.write("data", 36, "ascii");
  wav.writeUInt32LE(samples.length, 40);
  for (let i = 0; i < samples.length; i++) {
    const clipped = Math.max(-1, Math.min(1, samples[i]));
    wav[44 + i] = Math.round(128 + clipped * 127);
  }
  return wav;
}

// Reads back what a player needs to know from a WAV file made by encodeWav.
export function readWavInfo(buffer) {
  if (buffer.toString("ascii", 0, 4) !== "RIFF" || buffer.toString("ascii", 8, 12) !== "WAVE") {
    throw new Error("Not a WAV file.");
  }
  const sampleRate = buffer.readUInt32LE(24);
  const bytesPerSecond = buffer.readUInt32LE(28);
  const dataBytes = buffer.readUInt32LE(40);
  return { sampleRate, duration: dataBytes / bytesPerSecond };
}
