import { tracks } from "./tracks.js";
import { Playlist } from "./playlist.js";
import { formatTime, progress } from "./time.js";

const playlist = new Playlist(tracks);
const audio = document.querySelector("#audio");
const list = document.querySelector("#track-list");
const playButton = document.querySelector("#play");
const seek = document.querySelector("#seek");
let seeking = false;

function cover(track) {
  return `linear-gradient(135deg, ${track.colors[0]}, ${track.colors[1]})`;
}

function renderTrackList() {
  list.replaceChildren(
    ...tracks.map((track, index) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "track";
      button.dataset.index = String(index);
      button.innerHTML = `
        <span class="track-number">${index + 1}</span>
        <span class="cover"></span>
        <span><span class="track-title"></span><br><span class="track-artist muted"></span></span>
        <span class="track-time">${formatTime(track.duration)}</span>`;
      button.querySelector(".cover").style.background = cover(track);
      button.querySelector(".track-title").textContent = track.title;
      button.querySelector(".track-artist").textContent = track.artist;
      button.addEventListener("click", () => play(playlist.select(index)));
      item.append(button);
      return item;
    }),
  );
  document.querySelector("#track-count").textContent = `${tracks.length} tracks`;
}

function showTrack(track) {
  document.querySelector("#now-title").textContent = track.title;
  document.querySelector("#now-artist").textContent = track.artist;
  document.querySelector("#now-cover").style.background = cover(track);
  document.querySelector("#duration").textContent = formatTime(track.duration);
  for (const button of list.querySelectorAll(".track")) {
    button.setAttribute("aria-current", String(Number(button.dataset.index) === playlist.index));
  }
}

function load(track) {
  if (audio.getAttribute("src") !== track.src) audio.src = track.src;
  audio.currentTime = 0;
  showTrack(track);
  updateProgress();
}

function play(track) {
  load(track);
  audio.play().catch(updatePlayButton);
}

function togglePlay() {
  if (!audio.getAttribute("src")) return play(playlist.current);
  if (audio.paused) audio.play().catch(updatePlayButton);
  else audio.pause();
}

function updatePlayButton() {
  const playing = !audio.paused;
  playButton.dataset.playing = String(playing);
  playButton.setAttribute("aria-label", playing ? "Pause" : "Play");
}

function updateProgress() {
  const duration = Number.isFinite(audio.duration) ? audio.duration : playlist.current.duration;
  document.querySelector("#elapsed").textContent = formatTime(audio.currentTime);
  if (!seeking) seek.value = String(Math.round(progress(audio.currentTime, duration) * 1000));
}

playButton.addEventListener("click", togglePlay);
document.querySelector("#next").addEventListener("click", () => play(playlist.next()));
document
  .querySelector("#previous")
  .addEventListener("click", () => play(playlist.previous(audio.currentTime)));

seek.addEventListener("input", () => {
  seeking = true;
});
seek.addEventListener("change", () => {
  seeking = false;
  if (Number.isFinite(audio.duration)) audio.currentTime = (seek.value / 1000) * audio.duration;
});

audio.addEventListener("play", updatePlayButton);
audio.addEventListener("pause", updatePlayButton);
audio.addEventListener("timeupdate", updateProgress);
audio.addEventListener("ended", () => {
  const track = playlist.next();
  if (track) play(track);
});

document.addEventListener("keydown", (event) => {
  if (event.code === "Space" && event.target === document.body) {
    event.preventDefault();
    togglePlay();
  }
});

renderTrackList();
load(playlist.current);
