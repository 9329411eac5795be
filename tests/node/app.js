// An unmodified Node.js cluster worker branch, as in Node's docs, run by a ringleader
// primary (tests/tests/node.rs): an HTTP server on PORT answering with the worker's id, and
// messages the test uses to drive it.
const cluster = require('node:cluster');
const http = require('node:http');
const fs = require('node:fs');

if (cluster.isPrimary) {
  console.error('this app runs as a worker of a ringleader primary');
  process.exit(2);
}
const port = Number(process.env.PORT);
process.on('message', (m) => {
  if (m === 'ping') process.send({ pong: cluster.worker.id });
  // Bytes that are not JSON, straight onto the channel (fd 3).
  if (m === 'garbage') fs.writeSync(3, 'not json at all\n');
  if (m === 'binary') fs.writeSync(3, Buffer.from([0xff, 0xfe, 0x00, 0x0a]));
  // A handle message with no fd attached.
  if (m === 'handle-no-fd') {
    fs.writeSync(3, '{"cmd":"NODE_HANDLE","type":"net.Native","msg":{"x":1}}\n');
  }
  if (m === 'leave') cluster.worker.disconnect();
  if (m === 'exit') process.exit(7);
  // Stuck: its event loop never turns again (it takes no connection, answers nothing).
  if (m === 'busy') for (;;);
});
const id = cluster.worker.id;
let server;
process.on('message', (m) => {
  // server.close(): the worker stops listening and stays connected.
  if (m === 'close-server') server.close(() => process.send({ closed: id }));
});
switch (process.env.APP_MODE || 'http') {
  case 'http':
    server = http.createServer((req, res) => res.end(`hello from ${id}\n`));
    server.listen(port, '127.0.0.1');
    break;
  // A plain TCP server: a line, then close.
  case 'net':
    require('node:net')
      .createServer((c) => c.end(`hello from ${id}\n`))
      .listen(port, '127.0.0.1');
    break;
  // UDP: every worker binds the port; each datagram gets a pong.
  case 'dgram': {
    const s = require('node:dgram').createSocket('udp4');
    s.on('message', (m, from) => s.send(`pong from ${id}`, from.port, from.address));
    s.bind(port, '127.0.0.1');
    break;
  }
  // HTTP on a Unix socket at SOCK.
  case 'unix':
    http.createServer((req, res) => res.end(`hello from ${id}\n`)).listen(process.env.SOCK);
    break;
  // HTTPS with the test certificate (tests/node/test-*.pem, self-signed, for tests only):
  // its TLS session-ticket keys travel as the server's data, which the primary must echo.
  case 'https':
    require('node:https')
      .createServer(
        {
          key: fs.readFileSync(`${__dirname}/test-key.pem`),
          cert: fs.readFileSync(`${__dirname}/test-cert.pem`),
        },
        (req, res) => res.end(`hello from ${id}\n`),
      )
      .listen(port, '127.0.0.1');
    break;
  // listen(0): every worker gets the same port, and says which.
  case 'zero': {
    const server = http.createServer((req, res) => res.end(`hello from ${id}\n`));
    server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
    break;
  }
}
