#!/usr/bin/env node
// Node's http2 as the other end of CONNECT tunnels, for tests/test_tunnel_interop.py.
//
// Usage:
//   node node_tunnel.js client URL [CA]   opens tunnels to the aioh2s server at URL (TLS when
//                                         URL is https:, trusting CA): a plain CONNECT to
//                                         example.com:443 and, if the server's SETTINGS enable
//                                         it, an extended CONNECT (:protocol websocket, :path
//                                         /chat). In each it sends "ping", ends its side once
//                                         the 2xx arrived, and reads until the end. Prints one
//                                         JSON line: {enableConnectProtocol, plain: {status,
//                                         body}, extended: {status, body} or extended_error}
//   node node_tunnel.js server [CERT KEY] a server with enableConnectProtocol: answers every
//                                         CONNECT with 200 (x-protocol and x-authority say what
//                                         it got), echoes the tunnel's bytes, and after the
//                                         client's END_STREAM sends "after EOF" and ends; any
//                                         other request gets 404. Prints "LISTEN 127.0.0.1:PORT"
//                                         first and exits when stdin closes.
// Exits by itself after WATCHDOG_MS so a leaked process cannot outlive a test run.

'use strict';

const fs = require('fs');
const http2 = require('http2');

const WATCHDOG_MS = 60000;
setTimeout(() => process.exit(3), WATCHDOG_MS).unref();

function tunnel(session, headers) {
  return new Promise((resolve) => {
    let req;
    try {
      req = session.request(headers, { endStream: false });
    } catch (e) {
      resolve({ error: e.code || String(e) });
      return;
    }
    const chunks = [];
    let status = null;
    req.on('response', (h) => {
      status = h[':status'];
      req.write('ping');
      req.end();
    });
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString() }));
    req.on('error', (e) => resolve({ status, error: e.code || String(e) }));
  });
}

function client(url, ca) {
  const options = ca ? { ca: fs.readFileSync(ca), servername: 'localhost' } : {};
  const session = http2.connect(url, options);
  session.on('error', (e) => {
    console.log(JSON.stringify({ error: String(e) }));
    process.exit(1);
  });
  session.once('remoteSettings', async (settings) => {
    const out = { enableConnectProtocol: !!settings.enableConnectProtocol };
    out.plain = await tunnel(session, { ':method': 'CONNECT', ':authority': 'example.com:443' });
    const u = new URL(url);
    const extended = {
      ':method': 'CONNECT', ':protocol': 'websocket', ':scheme': u.protocol.slice(0, -1),
      ':path': '/chat', ':authority': u.host,
    };
    const res = await tunnel(session, extended);
    if (res.error && res.status === null) out.extended_error = res.error;
    else out.extended = res;
    console.log(JSON.stringify(out));
    session.close();
  });
}

function server(cert, key) {
  const settings = { enableConnectProtocol: true };
  const srv = cert
    ? http2.createSecureServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), settings })
    : http2.createServer({ settings });
  srv.on('stream', (stream, headers) => {
    if (headers[':method'] !== 'CONNECT') {
      stream.respond({ ':status': 404 });
      stream.end();
      return;
    }
    stream.respond({
      ':status': 200,
      'x-protocol': headers[':protocol'] || '',
      'x-authority': headers[':authority'] || '',
    });
    stream.on('data', (c) => stream.write(c));
    stream.on('end', () => stream.end('after EOF'));
    stream.on('error', () => {});
  });
  srv.listen(0, '127.0.0.1', () => console.log(`LISTEN 127.0.0.1:${srv.address().port}`));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

if (process.argv[2] === 'client') client(process.argv[3], process.argv[4]);
else if (process.argv[2] === 'server') server(process.argv[3], process.argv[4]);
else {
  console.error('usage: node node_tunnel.js client URL [CA] | server [CERT KEY]');
  process.exit(2);
}
