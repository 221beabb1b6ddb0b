// Formats a number of seconds the way players show it: "3:07", "1:02:45".
// Anything that is not a usable number of seconds shows as "0:00".
export function formatTime(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "0:00";
  const total = Math.floor(seconds);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = String(total % 60).padStart(2, "0");
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, "0")}:${secs}`;
  return `${minutes}:${secs}`;
}

// How far through a track we are, from 0 to 1. Before the browser knows the
// duration (NaN or 0) the answer is 0, so the progress bar never jumps.
export function progress(current, duration) {
  if (!Number.isFinite(duration) || duration <= 0) return 0;
  if (!Number.isFinite(current) || current <= 0) return 0;
  return Math.min(current / duration, 1);
}
