// Pressing "previous" more than this many seconds into a track restarts it
// instead of going back, as most players do.
export const RESTART_AFTER = 3;

// Which track is playing and what next/previous lead to. Knows nothing about
// audio or the page, so it can be tested on its own.
export class Playlist {
  constructor(tracks, { loop = true } = {}) {
    if (tracks.length === 0) throw new Error("A playlist needs at least one track.");
    this.tracks = tracks;
    this.loop = loop;
    this.index = 0;
  }

  get current() {
    return this.tracks[this.index];
  }

  select(index) {
    if (!Number.isInteger(index) || index < 0 || index >= this.tracks.length) {
      throw new RangeError(`No track at position ${index}.`);
    }
    this.index = index;
    return this.current;
  }

  hasNext() {
    return this.loop || this.index < this.tracks.length - 1;
  }

  // Returns the track to play next, or null at the end of a playlist that
  // does not loop.
  next() {
    if (!this.hasNext()) return null;
    this.index = (this.index + 1) % this.tracks.length;
    return this.current;
  }

  // `elapsed` is how far into the current track we are, in seconds.
  previous(elapsed = 0) {
    if (elapsed > RESTART_AFTER) return this.current;
    if (this.index === 0 && !this.loop) return this.current;
    this.index = (this.index - 1 + this.tracks.length) % this.tracks.length;
    return this.current;
  }
}
