// The Express baseline of sluice-loadtest: an SSE server written the way the classic tutorials
// teach it. A Set of open responses, `res.write` in a loop to broadcast, and a `setInterval`
// heartbeat per connection. Deliberately unoptimized: it is the peer Sluice is compared with.
//
//   GET  /events    text/event-stream; every published body arrives as `data: <JSON>\n\n`
//   POST /publish   JSON body, broadcast to every open stream; answers {"success":true,"clients":N}
//
// PORT (default 3001, 0 picks a free one) and HOST (default 127.0.0.1) come from the environment
// or the command line (`node server.js 3001`). Prints `... listening on http://HOST:PORT` once
// it listens; the harness reads that line.
'use strict';

const express = require('express');

const app = express();
const clients = new Set();

app.get('/events', (req, res) => {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
  });
  res.write(': connected\n\n');
  clients.add(res);

  const heartbeat = setInterval(() => {
    res.write(': heartbeat\n\n');
  }, 15000);

  req.on('close', () => {
    clearInterval(heartbeat);
    clients.delete(res);
  });
});

app.post('/publish', express.json(), (req, res) => {
  const payload = `data: ${JSON.stringify(req.body)}\n\n`;
  for (const client of clients) {
    client.write(payload);
  }
  res.json({ success: true, clients: clients.size });
});

const port = Number(process.argv[2] ?? process.env.PORT ?? 3001);
const host = process.env.HOST ?? '127.0.0.1';
const server = app.listen(port, host, () => {
  const { address, port: actual } = server.address();
  console.log(`express baseline listening on http://${address}:${actual}`);
});

process.on('SIGTERM', () => {
  for (const client of clients) client.end();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
