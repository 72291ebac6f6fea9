#!/usr/bin/env node
// Independent HTTP/2 server for aioh2s interop tests (tests/test_interop.py).
//
// Usage:
//   node node_server.js                      h2c (http2.createServer)
//   node node_server.js CERT KEY             TLS + ALPN h2 (http2.createSecureServer)
//   node node_server.js CERT KEY --http1     HTTPS/1.1 offering ALPN http/1.1 only: a client
//                                            that offers only h2 gets a no_application_protocol
//                                            alert during the handshake
//   node node_server.js CERT KEY --no-alpn   TLS ignoring ALPN: the handshake completes with
//                                            no protocol selected, so an h2 client must give up
//
// Listens on 127.0.0.1, an ephemeral port, and prints the port as the first line on stdout.
// Routes:
//   GET  /            200, body GET_BODY
//   GET  /headers     200, JSON object of the request headers (name -> value)
//   POST /echo        200 sent at once, then the request body streamed back as it arrives;
//                     trailers x-trailer: node, x-len, x-sha256 of the body, and
//                     x-echo-NAME for every request trailer NAME
//   POST /sha256      reads the whole body, answers JSON {len, sha256, trailers}
//   GET  /big?n=N     N bytes of the pattern byte[i] = i % 251, with backpressure;
//                     trailers x-len and x-sha256
//   anything else     404
// Exits by itself after WATCHDOG_MS so a leaked process cannot outlive a test run.

'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');
const https = require('https');
const tls = require('tls');

const GET_BODY = 'hello from node\n';
const WATCHDOG_MS = 120000;
// A multiple of 251 so every chunk starts at pattern offset 0.
const PATTERN_CHUNK = (() => {
  const b = Buffer.alloc(251 * 256);
  for (let i = 0; i < b.length; i++) b[i] = i % 251;
  return b;
})();

const args = process.argv.slice(2);
const http1 = args.includes('--http1');
const noAlpn = args.includes('--no-alpn');
const positional = args.filter((a) => !a.startsWith('--'));

function log(...parts) {
  process.stderr.write(`node_server: ${parts.join(' ')}\n`);
}

function sendBig(stream, n) {
  const sha = crypto.createHash('sha256');
  let left = n;
  stream.on('wantTrailers', () => {
    stream.sendTrailers({ 'x-len': String(n), 'x-sha256': sha.digest('hex') });
  });
  const pump = () => {
    while (left > 0) {
      const chunk = left >= PATTERN_CHUNK.length ? PATTERN_CHUNK : PATTERN_CHUNK.subarray(0, left);
      left -= chunk.length;
      sha.update(chunk);
      if (!stream.write(chunk)) {
        stream.once('drain', pump);
        return;
      }
    }
    stream.end();
  };
  pump();
}

function onStream(stream, headers) {
  stream.on('error', (err) => log('stream error', err.code || err.message));
  const method = headers[':method'];
  const url = new URL(headers[':path'], 'http://x');
  const path = url.pathname;

  if (method === 'GET' && path === '/') {
    stream.respond({ ':status': 200, 'content-type': 'text/plain' });
    stream.end(GET_BODY);
  } else if (method === 'GET' && path === '/headers') {
    const copy = {};
    for (const [k, v] of Object.entries(headers)) copy[k] = String(v);
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify(copy));
  } else if (method === 'POST' && path === '/echo') {
    const sha = crypto.createHash('sha256');
    let len = 0;
    let reqTrailers = {};
    stream.on('trailers', (t) => { reqTrailers = t; });
    stream.respond(
      { ':status': 200, 'content-type': 'application/octet-stream' },
      { waitForTrailers: true },
    );
    stream.on('wantTrailers', () => {
      const t = { 'x-trailer': 'node', 'x-len': String(len), 'x-sha256': sha.digest('hex') };
      for (const [k, v] of Object.entries(reqTrailers)) t[`x-echo-${k}`] = String(v);
      stream.sendTrailers(t);
    });
    stream.on('data', (chunk) => {
      sha.update(chunk);
      len += chunk.length;
      // Respect our own backpressure: stop reading the request until the response drains.
      if (!stream.write(chunk)) {
        stream.pause();
        stream.once('drain', () => stream.resume());
      }
    });
    stream.on('end', () => stream.end());
  } else if (method === 'POST' && path === '/sha256') {
    const sha = crypto.createHash('sha256');
    let len = 0;
    let reqTrailers = {};
    stream.on('trailers', (t) => { reqTrailers = t; });
    stream.on('data', (chunk) => { sha.update(chunk); len += chunk.length; });
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify({ len, sha256: sha.digest('hex'), trailers: reqTrailers }));
    });
  } else if (method === 'GET' && path === '/big') {
    const n = Number.parseInt(url.searchParams.get('n') || '0', 10);
    stream.respond(
      { ':status': 200, 'content-type': 'application/octet-stream', 'content-length': String(n) },
      { waitForTrailers: true },
    );
    sendBig(stream, n);
  } else {
    stream.respond({ ':status': 404 });
    stream.end('not found\n');
  }
}

let server;
if (positional.length >= 2) {
  const opts = { key: fs.readFileSync(positional[1]), cert: fs.readFileSync(positional[0]) };
  if (http1) {
    server = https.createServer({ ...opts, ALPNProtocols: ['http/1.1'] }, (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('http/1.1 only\n');
    });
  } else if (noAlpn) {
    // https.createServer always selects http/1.1, so use raw TLS with no ALPN callback at all
    // and answer whatever arrives like an old HTTP/1.1 server would.
    server = tls.createServer(opts, (sock) => {
      sock.on('error', (err) => log('tls socket error', err.code || err.message));
      sock.once('data', () => {
        sock.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      });
    });
  } else {
    server = http2.createSecureServer(opts);
  }
} else {
  server = http2.createServer();
}
if (!http1 && !noAlpn) {
  server.on('stream', onStream);
  server.on('sessionError', (err) => log('session error', err.code || err.message));
}
server.on('tlsClientError', (err) => log('tls client error', err.code || err.message));
server.on('error', (err) => { log('server error', err.message); process.exit(1); });
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});

// unref: the timer must not be what keeps the process alive; the listening server is.
setTimeout(() => { log('watchdog expired'); process.exit(3); }, WATCHDOG_MS).unref();
process.on('SIGTERM', () => process.exit(0));
