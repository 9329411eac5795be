'use strict';
// How long Node's cluster takes from fork() to 'online' and to 'listening', one worker at a
// time, each listening on port 0. Prints one JSON line: {"online_ms": [...], "listening_ms": [...]}.
//
//   node startup.js --count 20
const cluster = require('node:cluster');

if (cluster.isPrimary) {
  setTimeout(() => process.exit(3), 300000).unref();
  const at = process.argv.indexOf('--count');
  const count = at >= 0 ? +process.argv[at + 1] : 20;
  const online = [];
  const listening = [];
  const next = () => {
    if (online.length === count) {
      console.log(JSON.stringify({ online_ms: online, listening_ms: listening }));
      process.exit(0);
    }
    const start = process.hrtime.bigint();
    const worker = cluster.fork();
    const ms = () => Number(process.hrtime.bigint() - start) / 1e6;
    worker.on('online', () => online.push(ms()));
    worker.on('listening', () => {
      listening.push(ms());
      worker.on('exit', next);
      worker.kill();
    });
  };
  next();
} else {
  require('node:net').createServer().listen(0, '127.0.0.1');
}
