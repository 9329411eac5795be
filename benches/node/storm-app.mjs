// A Node.js cluster app for the SIGKILL storm (benches/src/bin/storm.rs): Node's
// documentation example with one change, the primary forks a replacement as soon as a
// worker exits (as PM2 would), so that Node's own primary serves on through the storm.
// Under `ringleader run` only the worker branch runs, and ringleader replaces the workers.
// Bounded: exits after 600 s whatever happens.
import cluster from 'node:cluster';
import http from 'node:http';
import { availableParallelism } from 'node:os';
import process from 'node:process';

setTimeout(() => process.exit(0), 600_000).unref();
if (cluster.isPrimary) {
  const workers = Number(process.env.WORKERS || availableParallelism());
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', () => cluster.fork());
} else {
  http
    .createServer((req, res) => {
      res.writeHead(200);
      res.end('hello world\n');
    })
    .listen(Number(process.env.PORT));
}
