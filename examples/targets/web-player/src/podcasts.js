// Shows the podcast section when the player runs with its server.
import { episodeDetails, loadEpisodes } from "./episodes.js";

const section = document.querySelector("#podcasts");
const list = document.querySelector("#episode-list");
const status = document.querySelector("#podcast-status");

const result = await loadEpisodes();
if (result.state !== "none") {
  section.hidden = false;
  if (result.state === "error") {
    status.textContent = result.message;
    status.setAttribute("role", "alert");
  } else {
    status.textContent = `${result.episodes.length} episodes`;
    list.replaceChildren(
      ...result.episodes.map((episode) => {
        const item = document.createElement("li");
        item.className = "section-head"; // title left, details right (styles.css)
        const title = document.createElement("span");
        title.className = "track-title";
        title.textContent = episode.title;
        const details = document.createElement("span");
        details.className = "muted";
        details.textContent = episodeDetails(episode);
        item.append(title, details);
        return item;
      }),
    );
  }
}
