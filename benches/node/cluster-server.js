'use strict';
// Node's side of benches/src/bin/compare.rs: a cluster serving the same workloads as
// benches/src/bin/cluster_server.rs, started the same way.
//
//   node cluster-server.js --mode tcp|http --workers N --port P
//
// tcp: write "hello\n" and end; http: "hello world\n" with keep-alive (Node's default).
// The policy comes from NODE_CLUSTER_SCHED_POLICY (rr or none). Prints
// `READY {"primary": <pid>}` once every worker listens; exits on SIGTERM. --workers 0 serves
// in this one process. Bounded: exits after 600 s whatever happens.
const cluster = require('node:cluster');
const net = require('node:net');
const http = require('node:http');

const option = (name, fallback) => {
  const at = process.argv.indexOf('--' + name);
  return at >= 0 ? process.argv[at + 1] : fallback;
};
const mode = option('mode', 'tcp');
const workers = +option('workers', '2');
const port = +option('port', '8000');

function serve() {
  const server = mode === 'http'
    ? http.createServer((req, res) => {
        res.setHeader('content-length', '12');
        res.end('hello world\n');
      })
    : net.createServer((socket) => {
        socket.on('error', () => {});
        socket.end('hello\n');
      });
  server.listen(port, '127.0.0.1');
  return server;
}

if (workers === 0 || cluster.isPrimary) {
  setTimeout(() => process.exit(3), 600000).unref();
}

if (workers === 0) {
  serve().on('listening', () => console.log('READY ' + JSON.stringify({ primary: process.pid })));
  process.on('SIGTERM', () => process.exit(0));
} else if (cluster.isPrimary) {
  let listening = 0;
  cluster.on('listening', () => {
    listening += 1;
    if (listening === workers) console.log('READY ' + JSON.stringify({ primary: process.pid }));
  });
  for (let i = 0; i < workers; i++) cluster.fork();
  process.on('SIGTERM', () => {
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGKILL');
    process.exit(0);
  });
} else {
  serve();
}
