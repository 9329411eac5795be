// A Node.js cluster worker that starts a child of its own (`sleep 60`, as a worker might
// start a helper) and says its pid, then serves on PORT.
import cluster from 'node:cluster';
import http from 'node:http';
import { spawn } from 'node:child_process';

if (cluster.isWorker) {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  console.log(`CHILD ${child.pid}`);
  http.createServer((req, res) => res.end('hello world\n')).listen(Number(process.env.PORT));
}
