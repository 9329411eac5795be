// socket.io's own client over long-polling only: CLIENTS sessions, each from its own
// loopback address (127.0.1.N, through an http.Agent without keep-alive, so every poll is
// a new connection), each sending MESSAGES acknowledged messages. Prints one line,
// `completed C of N`, with the first errors, and exits 0 whatever the count.
const http = require('node:http');
const { io } = require('socket.io-client');

const port = Number(process.env.PORT);
const clients = Number(process.env.CLIENTS || 40);
const messages = Number(process.env.MESSAGES || 8);
const errors = [];

function session(i) {
  return new Promise((resolve) => {
    const agent = new http.Agent({ keepAlive: false, localAddress: `127.0.1.${i + 1}` });
    const socket = io(`http://127.0.0.1:${port}`, {
      transports: ['polling'],
      agent,
      reconnection: false,
      timeout: 5000,
    });
    let done = false;
    const finish = (ok, why) => {
      if (done) return;
      done = true;
      if (!ok && errors.length < 5) errors.push(`client ${i + 1}: ${why}`);
      socket.close();
      resolve(ok);
    };
    socket.on('connect_error', (e) => finish(false, `connect_error ${e.message}`));
    socket.on('disconnect', (why) => finish(false, `disconnect ${why}`));
    socket.on('connect', async () => {
      try {
        for (let n = 0; n < messages; n++) {
          await socket.timeout(5000).emitWithAck('message', n);
        }
        finish(true);
      } catch (e) {
        finish(false, `ack ${e.message}`);
      }
    });
  });
}

Promise.all(Array.from({ length: clients }, (_, i) => session(i))).then((results) => {
  const completed = results.filter(Boolean).length;
  console.log(`completed ${completed} of ${clients}${errors.length ? `; ${errors.join('; ')}` : ''}`);
  process.exit(0);
});
