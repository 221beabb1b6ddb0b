// The playlist the player shows. Durations are in seconds and match the
// audio files that build.mjs generates into dist/audio/.
export const tracks = [
  {
    id: "morning-light",
    title: "Morning Light",
    artist: "Juniper Fields",
    duration: 24,
    src: "audio/morning-light.wav",
    colors: ["#ffb88c", "#de6262"],
  },
  {
    id: "paper-boats",
    title: "Paper Boats",
    artist: "The Low Tides",
    duration: 19,
    src: "audio/paper-boats.wav",
    colors: ["#a1c4fd", "#5b6ee1"],
  },
  {
    id: "night-drive",
    title: "Night Drive",
    artist: "Analog Hearts",
    duration: 28,
    src: "audio/night-drive.wav",
    colors: ["#434343", "#7f53ac"],
  },
  {
    id: "copper-sky",
    title: "Copper Sky",
    artist: "Mira Sol",
    duration: 21,
    src: "audio/copper-sky.wav",
    colors: ["#f6d365", "#fda085"],
  },
  {
    id: "slow-orbit",
    title: "Slow Orbit",
    artist: "Juniper Fields",
    duration: 26,
    src: "audio/slow-orbit.wav",
    colors: ["#43e97b", "#38a3a5"],
  },
];
