// GETs https://127.0.0.1:PORT/ COUNT times, one after another, trusting the test's
// self-signed certificate; prints each body, then exits 0 (1 on any error).
const https = require('node:https');
const port = Number(process.argv[2]);
let left = Number(process.argv[3] || 1);
function next() {
  if (left-- === 0) return;
  https
    .get({ host: '127.0.0.1', port, path: '/', rejectUnauthorized: false, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => {
        process.stdout.write(body);
        next();
      });
    })
    .on('error', (e) => {
      console.error(e.message);
      process.exit(1);
    });
}
next();
