// A WebSocket client nobody at echokit wrote: Node's `ws` library (the one wscat is built
// on; Debian's node-ws), for tests/test_websocket.py's NodeWsClientTests.
//
//     node tests/ws_node_client.js URL CA_FILE|- SIZE...
//
// Sends one binary message of each SIZE (random bytes), then one text message, each after
// the echo of the one before; then a ping; then closes with 1000. Prints one JSON line:
// for every message its type and SHA-256 as sent and as echoed, the pong's payload, and
// the close code the server answered with. Exits 1 on an error, 2 after 60 s.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const WebSocket = require('ws');

const [url, caFile, ...sizes] = process.argv.slice(2);
const options = {};
if (caFile !== '-') options.ca = fs.readFileSync(caFile); // hostname checked, as by default
const payloads = sizes.map((size) => crypto.randomBytes(Number(size)));
payloads.push('héllo wörld');
const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');
const typeOf = (payload) => (typeof payload === 'string' ? 'text' : 'binary');

const messages = [];
let pong = null;
let next = 0;
const socket = new WebSocket(url, options);

function sendNext() {
  if (next === payloads.length) {
    socket.ping(Buffer.from('are you there'));
    return;
  }
  const payload = payloads[next];
  socket.send(payload, { binary: typeOf(payload) === 'binary' });
}

socket.on('open', sendNext);
socket.on('message', (data, isBinary) => {
  const sent = payloads[next];
  messages.push({
    sent_type: typeOf(sent),
    echo_type: isBinary ? 'binary' : 'text',
    sent: sha256(sent),
    echo: sha256(data),
  });
  next += 1;
  sendNext();
});
socket.on('pong', (data) => {
  pong = data.toString();
  socket.close(1000, 'done');
});
socket.on('close', (code) => {
  console.log(JSON.stringify({ messages, pong, close: code }));
  process.exit(0);
});
socket.on('error', (error) => {
  console.error(`error: ${error.message}`);
  process.exit(1);
});
setTimeout(() => {
  console.error('no close within 60 s');
  process.exit(2);
}, 60000).unref();
