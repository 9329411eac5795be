'use strict';
// Node's cluster IPC at a given message size, measured the way benches/src/bin/ipc_compare.rs
// measures ringleader: ping-pong round trips (per-message latency) and one-way streams.
//
//   node ipc-sizes.js --size 64 --pingpong 20000 --stream 200000 --reps 5
//
// The message is {d: <string of SIZE characters>}. Prints one JSON line per rep and a
// SUMMARY line with medians. Bounded: aborts after 300 s.
const cluster = require('node:cluster');

const arg = (name, def) => {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : def;
};

if (cluster.isPrimary) {
  setTimeout(() => { console.error('ipc-sizes: time limit'); process.exit(3); }, 300000).unref();
  const size = +arg('size', '64');
  const pp = +arg('pingpong', '20000');
  const stream = +arg('stream', '200000');
  const reps = +arg('reps', '5');
  const body = 'x'.repeat(size);
  const w = cluster.fork({ IPC_SIZE: String(size) });
  const now = () => process.hrtime.bigint();
  let onMessage = () => {};
  w.on('message', (m) => onMessage(m));
  const next = (pred) => new Promise((res) => { onMessage = (m) => { if (pred(m)) res(m); }; });

  const pingpong = (n) => new Promise((res) => {
    const lat = new Float64Array(n);
    let i = 0;
    let t0 = now();
    onMessage = () => {
      lat[i++] = Number(now() - t0) / 1000;
      if (i === n) return res(lat);
      t0 = now();
      w.send({ d: body });
    };
    w.send({ d: body });
  });

  const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };
  const pct = (lat, p) => { const s = Float64Array.from(lat).sort(); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };

  (async () => {
    await next((m) => m === 'online');
    const rows = [];
    for (let r = 0; r < reps; r++) {
      await pingpong(Math.min(2000, pp));
      const lat = await pingpong(pp);
      w.send({ mode: 'sink' });
      await next((m) => m === 'sinking');
      const done = next((m) => m && m.count !== undefined);
      let t0 = now();
      for (let i = 0; i < stream; i++) w.send({ d: body });
      w.send({ end: true });
      const got = await done;
      if (got.count !== stream) throw new Error('lost messages');
      const p2w = stream / (Number(now() - t0) / 1e9);
      let count = 0;
      const finished = new Promise((res) => { onMessage = (m) => { if (m && m.d !== undefined) count++; else if (m && m.end) res(); }; });
      t0 = now();
      w.send({ mode: 'source', n: stream });
      await finished;
      const w2p = stream / (Number(now() - t0) / 1e9);
      if (count !== stream) throw new Error('lost messages w2p');
      const row = { size, rep: r, rtt_p50_us: pct(lat, 0.5), rtt_p99_us: pct(lat, 0.99), p2w_msgs_per_s: Math.round(p2w), w2p_msgs_per_s: Math.round(w2p) };
      console.log(JSON.stringify(row));
      rows.push(row);
    }
    const pick = (k) => median(rows.map((r) => r[k]));
    console.log('SUMMARY ' + JSON.stringify({ node: process.version, size, reps, rtt_p50_us: pick('rtt_p50_us'), rtt_p99_us: pick('rtt_p99_us'), p2w_msgs_per_s: pick('p2w_msgs_per_s'), w2p_msgs_per_s: pick('w2p_msgs_per_s'), primary_maxrss_kb: process.resourceUsage().maxRSS }));
    w.disconnect();
  })();
} else {
  let mode = 'echo';
  let count = 0;
  process.on('message', (m) => {
    if (m && m.mode === 'sink') { mode = 'sink'; count = 0; process.send('sinking'); return; }
    if (m && m.mode === 'source') {
      const body = 'x'.repeat(+process.env.IPC_SIZE || 64);
      for (let i = 0; i < m.n; i++) process.send({ d: body });
      process.send({ end: true });
      mode = 'echo';
      return;
    }
    if (mode === 'sink') {
      if (m && m.end) { process.send({ count }); mode = 'echo'; } else count++;
      return;
    }
    process.send(m);
  });
  process.send('online');
}
