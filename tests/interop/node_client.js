#!/usr/bin/env node
// Independent HTTP/2 client for aioh2s interop tests (tests/test_interop.py).
//
// Usage: node node_client.js URL SPEC [--ca CA.pem]
//   URL   http://127.0.0.1:PORT (h2c, prior knowledge) or https://127.0.0.1:PORT (TLS, ALPN h2)
//   SPEC  JSON list of requests, all sent concurrently on one http2.connect() session:
//         {"method": "POST", "path": "/echo",
//          "body": "text" | "pattern": N (N bytes, byte[i] = i % 251),
//          "headers": {...}, "trailers": {...} (sent as request trailers)}
//
// Prints one JSON object on stdout: {"alpn": ..., "results": [...]}, a result per request:
//   {"status", "headers", "trailers", "len", "sha256", "body" (utf-8, only if len <= 65536),
//    "error"}
// Exit code 0 if every request completed without error, 1 otherwise, 2 on bad usage,
// 3 when the watchdog fires.

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');

const WATCHDOG_MS = 60000;
const PATTERN_CHUNK = (() => {
  const b = Buffer.alloc(251 * 256);
  for (let i = 0; i < b.length; i++) b[i] = i % 251;
  return b;
})();

function usage(msg) {
  process.stderr.write(`node_client: ${msg}\nusage: node node_client.js URL SPEC [--ca FILE]\n`);
  process.exit(2);
}

function plain(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers || {})) out[k] = Array.isArray(v) ? v.join(', ') : String(v);
  return out;
}

function writeBody(req, spec) {
  if (spec.pattern !== undefined) {
    let left = spec.pattern;
    const pump = () => {
      while (left > 0) {
        const chunk = left >= PATTERN_CHUNK.length ? PATTERN_CHUNK : PATTERN_CHUNK.subarray(0, left);
        left -= chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', pump);
          return;
        }
      }
      req.end();
    };
    pump();
  } else {
    req.end(spec.body !== undefined ? Buffer.from(spec.body, 'utf8') : undefined);
  }
}

function doRequest(session, spec) {
  return new Promise((resolve) => {
    const result = { status: null, headers: null, trailers: null, len: 0, sha256: null, error: null };
    const sha = crypto.createHash('sha256');
    const chunks = [];
    const method = spec.method || 'GET';
    const hasBody = spec.body !== undefined || spec.pattern !== undefined || spec.trailers;
    const headers = { ':method': method, ':path': spec.path || '/', ...(spec.headers || {}) };
    const req = session.request(headers, {
      endStream: !hasBody,
      waitForTrailers: Boolean(spec.trailers),
    });
    if (spec.trailers) req.on('wantTrailers', () => req.sendTrailers(spec.trailers));
    req.on('response', (h) => {
      result.status = Number(h[':status']);
      result.headers = plain(h);
    });
    req.on('trailers', (t) => { result.trailers = plain(t); });
    req.on('data', (chunk) => {
      sha.update(chunk);
      result.len += chunk.length;
      if (result.len <= 65536) chunks.push(chunk);
    });
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      result.sha256 = sha.digest('hex');
      if (result.len <= 65536) result.body = Buffer.concat(chunks).toString('utf8');
      resolve(result);
    };
    req.on('end', finish);
    req.on('error', (err) => { result.error = `${err.code || ''} ${err.message}`.trim(); finish(); });
    req.on('close', () => {
      if (!done && req.rstCode) result.error = `closed with RST_STREAM code ${req.rstCode}`;
      finish();
    });
    if (hasBody) writeBody(req, spec);
  });
}

async function main() {
  const argv = process.argv.slice(2);
  let ca = null;
  const caIdx = argv.indexOf('--ca');
  if (caIdx !== -1) {
    if (caIdx + 1 >= argv.length) usage('--ca needs a file');
    ca = fs.readFileSync(argv[caIdx + 1]);
    argv.splice(caIdx, 2);
  }
  if (argv.length !== 2) usage('need URL and SPEC');
  const [url, specText] = argv;
  let specs;
  try {
    specs = JSON.parse(specText);
  } catch (err) {
    usage(`SPEC is not JSON: ${err.message}`);
  }

  const session = http2.connect(url, ca ? { ca } : {});
  let sessionError = null;
  session.on('error', (err) => { sessionError = `${err.code || ''} ${err.message}`.trim(); });
  await new Promise((resolve) => {
    session.once('connect', resolve);
    session.once('error', resolve);
  });
  const out = { alpn: session.alpnProtocol || null, results: [], sessionError: null };
  if (!sessionError) out.results = await Promise.all(specs.map((s) => doRequest(session, s)));
  // A session that failed is already destroyed and would never emit 'close' again.
  await new Promise((resolve) => {
    if (session.destroyed) resolve();
    else session.close(resolve);
  });
  out.sessionError = sessionError;
  process.stdout.write(`${JSON.stringify(out)}\n`);
  const ok = !sessionError && out.results.every((r) => !r.error);
  process.exitCode = ok ? 0 : 1;
}

setTimeout(() => { process.stderr.write('node_client: watchdog expired\n'); process.exit(3); },
  WATCHDOG_MS).unref();
main().catch((err) => { process.stderr.write(`node_client: ${err.stack}\n`); process.exit(1); });
