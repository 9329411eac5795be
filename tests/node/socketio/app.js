// A socket.io 4 app written for Node's cluster API, as socket.io's documentation shows
// one before sticky sessions: the primary forks, each worker serves socket.io on PORT.
// Each worker acknowledges a client's message with its pid. Under `ringleader run` only
// the worker branch runs.
const cluster = require('node:cluster');
const http = require('node:http');
const { availableParallelism } = require('node:os');
const { Server } = require('socket.io');

if (cluster.isPrimary) {
  for (let i = 0; i < availableParallelism(); i++) {
    cluster.fork();
  }
} else {
  const server = http.createServer();
  const io = new Server(server);
  io.on('connection', (socket) => {
    socket.on('message', (n, ack) => ack(`${n} from ${process.pid}`));
  });
  server.listen(Number(process.env.PORT));
}
