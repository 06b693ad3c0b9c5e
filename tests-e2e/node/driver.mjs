// A stock socket.io-client, driven line by line from a test (JSON on stdin, JSON on stdout).
//
// Commands (one JSON object per line on stdin):
//   {"op": "connect", "url": "...", "token": "...", "transports": ["websocket"], "headers": {}}
//   {"op": "emit", "id": 1, "event": "send_message", "data": {...}}   -> {"type": "ack", "id": 1, "data": ...}
//   {"op": "disconnect"}
// Reported (one JSON object per line on stdout):
//   {"type": "connected", "transport": "websocket"|"polling"}
//   {"type": "connect_error", "message": "...", "data": {...}}
//   {"type": "event", "name": "message", "data": {...}}   (acknowledged with {} at once)
//   {"type": "disconnected", "reason": "..."}
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

let socket = null;
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function connect(cmd) {
  socket = io(cmd.url, {
    path: "/socket.io/",
    auth: { token: cmd.token },
    transports: cmd.transports || ["websocket"],
    extraHeaders: cmd.headers || {},
    reconnection: false,
    timeout: 10000,
  });
  socket.on("connect", () => out({ type: "connected", transport: socket.io.engine.transport.name }));
  socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message, data: err.data ?? null }));
  socket.on("disconnect", (reason) => out({ type: "disconnected", reason }));
  socket.onAny((name, ...args) => {
    const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
    out({ type: "event", name, data: args.length === 1 ? args[0] : args });
    if (ack) ack({});
  });
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.op === "connect") connect(cmd);
  else if (cmd.op === "emit") {
    socket.timeout(10000).emit(cmd.event, cmd.data, (err, data) =>
      out({ type: "ack", id: cmd.id, data: err ? { error: { code: "timeout", message: String(err) } } : data }),
    );
  } else if (cmd.op === "disconnect") {
    if (socket) socket.disconnect();
  }
});
lines.on("close", () => {
  if (socket) socket.disconnect();
  process.exit(0);
});
