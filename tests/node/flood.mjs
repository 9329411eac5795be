// A Node.js cluster app whose first worker floods its stdout: once it listens, it writes
// FLOOD_MB MiB of 'x' with no newline, a MiB at a time and serving between them, then a line
// `flooded`. Every worker answers `hello world` on PORT.
import cluster from 'node:cluster';
import http from 'node:http';

if (cluster.isWorker) {
  const server = http.createServer((req, res) => res.end('hello world\n'));
  server.listen(Number(process.env.PORT), () => {
    if (cluster.worker.id !== 1) return;
    const chunk = Buffer.alloc(1 << 20, 'x');
    let left = Number(process.env.FLOOD_MB);
    const next = () => {
      if (left === 0) {
        process.stdout.write('\nflooded\n');
        return;
      }
      left -= 1;
      process.stdout.write(chunk, () => setImmediate(next));
    };
    next();
  });
}
