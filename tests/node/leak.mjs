// A Node.js cluster worker that leaks: it keeps 1 MiB (written, so resident) for every
// request it answers, and serves on PORT.
import cluster from 'node:cluster';
import http from 'node:http';

if (cluster.isWorker) {
  const kept = [];
  http
    .createServer((req, res) => {
      kept.push(Buffer.alloc(1 << 20, 1));
      res.end('hello world\n');
    })
    .listen(Number(process.env.PORT));
}
