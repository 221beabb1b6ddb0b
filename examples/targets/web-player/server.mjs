// The player as a live app: serves the built site and passes /api/* on to the
// podcast API named by $PODCAST_API_URL (the store starts that API beside it).
// Plain Node, no dependencies:  PORT=8080 PODCAST_API_URL=http://… node server.mjs [siteDir]
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".wav": "audio/wav",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

function sendJson(response, status, body) {
  const data = JSON.stringify(body) + "\n";
  response.writeHead(status, { "Content-Type": TYPES[".json"], "Content-Length": Buffer.byteLength(data) });
  response.end(data);
}

// The file under `root` a request path names, or null: no "..", no hidden
// files, and never the server's own source.
export function siteFile(root, urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath.split("?")[0]);
  } catch {
    return null;
  }
  if (decoded.endsWith("/")) decoded += "index.html";
  const parts = decoded.split("/").filter(Boolean);
  if (parts.some((part) => part.startsWith(".") || part.includes("\\") || part.includes("\0"))) return null;
  if (parts.length === 1 && parts[0] === "server.mjs") return null;
  const file = path.join(root, ...parts);
  return file.startsWith(root + path.sep) ? file : null;
}

// The API address a /api/... request goes to, or null when none is configured.
export function apiTarget(apiUrl, requestUrl) {
  if (!apiUrl) return null;
  const base = new URL(apiUrl.endsWith("/") ? apiUrl : apiUrl + "/");
  return new URL(requestUrl.slice("/api/".length), base);
}

async function serveFile(root, request, response) {
  const file = siteFile(root, request.url);
  const info = file && (await stat(file).catch(() => null));
  if (!info || !info.isFile()) return sendJson(response, 404, { error: "Not found." });
  const type = TYPES[path.extname(file)] ?? "application/octet-stream";
  response.writeHead(200, { "Content-Type": type, "Content-Length": info.size });
  if (request.method === "HEAD") return response.end();
  createReadStream(file).pipe(response);
}

function proxy(apiUrl, request, response) {
  const target = apiTarget(apiUrl, request.url);
  if (!target) {
    return sendJson(response, 503, { error: "No podcast API is configured (PODCAST_API_URL is not set)." });
  }
  const headers = { ...request.headers, host: target.host };
  const upstream = http.request(target, { method: request.method, headers }, (answer) => {
    response.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(response);
  });
  upstream.setTimeout(10_000, () => upstream.destroy(new Error("no answer within 10 s")));
  upstream.on("error", (error) => {
    if (response.headersSent) return response.destroy();
    sendJson(response, 502, { error: `The podcast API is unreachable (${error.message}).` });
  });
  request.pipe(upstream);
}

export function createServer({ root = here, apiUrl = process.env.PODCAST_API_URL } = {}) {
  const site = path.resolve(root);
  return http.createServer((request, response) => {
    if (request.url === "/api" || request.url.startsWith("/api/")) return proxy(apiUrl, request, response);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return sendJson(response, 405, { error: "Only GET and HEAD here." });
    }
    serveFile(site, request, response).catch(() => sendJson(response, 500, { error: "Could not read the file." }));
  });
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = Number(process.env.PORT ?? 8080);
  const root = path.resolve(process.argv[2] ?? here);
  createServer({ root }).listen(port, "0.0.0.0", () => {
    console.log(`Web Player on port ${port}, API at ${process.env.PODCAST_API_URL || "(none)"}`);
  });
}
