// Podcast episodes from the podcast API, through the player's own server
// (server.mjs passes /api/* on to it). Pure functions; podcasts.js draws them.
import { formatTime } from "./time.js";

// What the page should show: { state: "none" } when there is no server (a
// static preview: the section stays hidden), { state: "error", message } when
// the server is there but the API is not, { state: "ok", episodes } otherwise.
export async function loadEpisodes(fetchFn = fetch) {
  let response;
  try {
    response = await fetchFn("api/episodes", { headers: { Accept: "application/json" } });
  } catch {
    return { state: "none" };
  }
  const type = response.headers.get("content-type") ?? "";
  if (!type.includes("application/json")) return { state: "none" };
  let body;
  try {
    body = await response.json();
  } catch {
    return { state: "error", message: "The podcast API sent an answer the player cannot read." };
  }
  if (!response.ok || !Array.isArray(body.episodes)) {
    return { state: "error", message: body.error || `The podcast API answered ${response.status}.` };
  }
  return { state: "ok", episodes: body.episodes };
}

// One line under an episode's title: "2024-03-04 · 25:20".
export function episodeDetails(episode) {
  const parts = [episode.published, formatTime(episode.duration_seconds ?? 0)];
  return parts.filter(Boolean).join(" · ");
}
