#!/usr/bin/env node
// Reference signaling server for the relay benchmark.
//
// A plain Node socket.io 4 server with the same semantics as mikoto-rtc for
// what bench/loadgen.js uses (see docs/protocol.md): connect with
// auth {token}, room:join, room:leave, signal, participant:update, disconnect.
//
// Deliberate differences from mikoto-rtc (see bench/README.md):
// - the token is NOT verified: any non-empty string is accepted. If it looks
//   like a JWT its payload is decoded (unverified) for `sub` and `name`, else
//   the token itself is the user id. No grants are checked.
// - no TURN/STUN configuration: iceServers is always [].
// - single process, in-memory rooms, no Redis adapter.
//
// Usage: node reference/server.js [--port P] [--host H] [--deflate]
//   env: PORT, HOST, ROOM_MAX_PARTICIPANTS (default 10000)

"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");

function parseArgs(argv) {
  const out = {
    port: Number(process.env.PORT || 8781),
    host: process.env.HOST || "127.0.0.1",
    deflate: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") out.port = Number(argv[++i]);
    else if (a === "--host") out.host = argv[++i];
    else if (a === "--deflate") out.deflate = true;
    else if (/^\d+$/.test(a)) out.port = Number(a);
    else {
      console.error(`unknown argument: ${a}`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(out.port) || out.port <= 0 || out.port > 65535) {
    console.error(`bad port: ${out.port}`);
    process.exit(2);
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const ROOM_MAX = Number(process.env.ROOM_MAX_PARTICIPANTS || 10000);
const MAX_SDP_BYTES = 65536;
const ROOM_RE = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const DESC_TYPES = new Set(["offer", "answer", "pranswer", "rollback"]);
const STATE_KEYS = ["audio", "video", "screen", "hand", "speaking"];

// room name -> {seq, members: Map<participantId, participant>}
// participant = {id, user, name, state, meta, socket}
const rooms = new Map();

function err(code, message) {
  return { ok: false, error: { code, message } };
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function publicParticipant(p) {
  return { id: p.id, user: p.user, name: p.name, state: { ...p.state } };
}

function identityFromToken(token) {
  // Unverified decode, only to give participants a user id and a name.
  const parts = token.split(".");
  if (parts.length === 3) {
    try {
      const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
      if (isObject(claims) && typeof claims.sub === "string" && claims.sub) {
        return {
          user: claims.sub,
          name: typeof claims.name === "string" ? claims.name : claims.sub,
        };
      }
    } catch (_) {
      /* not a JWT: fall through */
    }
  }
  return { user: token.slice(0, 128), name: token.slice(0, 64) };
}

function newParticipantId() {
  return "p_" + crypto.randomBytes(9).toString("base64url");
}

function checkKeys(payload, allowed) {
  for (const k of Object.keys(payload)) if (!allowed.includes(k)) return k;
  return null;
}

function validateSignal(p) {
  if (!isObject(p)) return "payload must be an object";
  const unknown = checkKeys(p, ["room", "to", "description", "candidate"]);
  if (unknown) return `unknown field: ${unknown}`;
  if (typeof p.room !== "string" || !ROOM_RE.test(p.room)) return "bad room";
  if (typeof p.to !== "string" || !p.to) return "bad to";
  const hasD = "description" in p;
  const hasC = "candidate" in p;
  if (hasD === hasC) return "exactly one of description and candidate";
  if (hasD) {
    const d = p.description;
    if (!isObject(d)) return "description must be an object";
    if (checkKeys(d, ["type", "sdp"])) return "unknown field in description";
    if (!DESC_TYPES.has(d.type)) return "bad description.type";
    if (d.type !== "rollback" || "sdp" in d) {
      if (typeof d.sdp !== "string") return "description.sdp must be a string";
      if (Buffer.byteLength(d.sdp, "utf8") > MAX_SDP_BYTES) return "sdp too large";
    }
  } else {
    const c = p.candidate;
    if (c !== null) {
      if (!isObject(c)) return "candidate must be an object or null";
      if (checkKeys(c, ["candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"]))
        return "unknown field in candidate";
      if (typeof c.candidate !== "string") return "candidate.candidate must be a string";
      if ("sdpMid" in c && c.sdpMid !== null && typeof c.sdpMid !== "string") return "bad sdpMid";
      if ("sdpMLineIndex" in c && c.sdpMLineIndex !== null && !Number.isInteger(c.sdpMLineIndex))
        return "bad sdpMLineIndex";
      if ("usernameFragment" in c && c.usernameFragment !== null && typeof c.usernameFragment !== "string")
        return "bad usernameFragment";
    }
  }
  return null;
}

function leaveRoom(socket, roomName, reason) {
  const joined = socket.data.rooms; // room name -> participant
  const me = joined.get(roomName);
  if (!me) return false;
  joined.delete(roomName);
  socket.leave(roomName);
  const room = rooms.get(roomName);
  if (!room) return true;
  room.members.delete(me.id);
  if (room.members.size === 0) {
    rooms.delete(roomName);
    return true;
  }
  room.seq += 1;
  const ev = { room: roomName, seq: room.seq, id: me.id, reason };
  io.to(roomName).emit("participant:left", ev);
  return true;
}

const httpServer = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ok: true, rooms: rooms.size }));
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(httpServer, {
  path: "/socket.io/",
  transports: ["websocket", "polling"],
  serveClient: false,
  perMessageDeflate: args.deflate ? { threshold: 1024 } : false,
  maxHttpBufferSize: 1e6,
});

io.use((socket, next) => {
  const auth = socket.handshake.auth;
  if (!isObject(auth)) {
    const e = new Error("auth must be an object");
    e.data = { code: "bad_request", message: "auth must be an object" };
    return next(e);
  }
  if (typeof auth.token !== "string" || auth.token.length === 0) {
    const e = new Error("missing token");
    e.data = { code: "unauthorized", message: "missing token" };
    return next(e);
  }
  socket.data.identity = identityFromToken(auth.token);
  socket.data.rooms = new Map();
  next();
});

io.on("connection", (socket) => {
  const handlers = {
    "room:join"(p) {
      if (!isObject(p)) return err("bad_request", "payload must be an object");
      const unknown = checkKeys(p, ["room", "name", "meta"]);
      if (unknown) return err("bad_request", `unknown field: ${unknown}`);
      if (typeof p.room !== "string" || !ROOM_RE.test(p.room)) return err("bad_request", "bad room");
      if ("name" in p && (typeof p.name !== "string" || p.name.length > 64))
        return err("bad_request", "bad name");
      if ("meta" in p && (!isObject(p.meta) || JSON.stringify(p.meta).length > 2048))
        return err("bad_request", "bad meta");
      if (socket.data.rooms.has(p.room)) return err("conflict", "already in this room");
      let room = rooms.get(p.room);
      if (room && room.members.size >= ROOM_MAX) return err("room_full", "room is full");
      if (!room) {
        room = { seq: 0, members: new Map() };
        rooms.set(p.room, room);
      }
      const ident = socket.data.identity;
      const me = {
        id: newParticipantId(),
        user: ident.user,
        name: p.name !== undefined ? p.name : ident.name,
        state: { audio: false, video: false, screen: false, hand: false, speaking: false },
        meta: p.meta || null,
        socket,
      };
      const others = [];
      for (const other of room.members.values()) others.push({ ...publicParticipant(other), polite: true });
      room.members.set(me.id, me);
      socket.data.rooms.set(p.room, me);
      room.seq += 1;
      const ev = { room: p.room, seq: room.seq, participant: publicParticipant(me), polite: false };
      // socket.io's own broadcast (encoded once, written to every member but the sender).
      socket.to(p.room).emit("participant:joined", ev);
      socket.join(p.room);
      return {
        ok: true,
        room: p.room,
        seq: room.seq,
        self: { id: me.id, user: me.user, name: me.name },
        participants: others,
        iceServers: [],
      };
    },

    "room:leave"(p) {
      if (!isObject(p) || typeof p.room !== "string") return err("bad_request", "bad room");
      if (checkKeys(p, ["room"])) return err("bad_request", "unknown field");
      if (!leaveRoom(socket, p.room, "leave")) return err("not_found", "not in that room");
      return { ok: true };
    },

    signal(p) {
      const bad = validateSignal(p);
      if (bad) return err("bad_request", bad);
      const me = socket.data.rooms.get(p.room);
      if (!me) return err("not_found", "not in that room");
      const room = rooms.get(p.room);
      const target = room && room.members.get(p.to);
      if (!target) return err("not_found", "no such participant in that room");
      const out = { room: p.room, from: me.id };
      if ("description" in p) out.description = p.description;
      else out.candidate = p.candidate;
      target.socket.emit("signal", out);
      return { ok: true };
    },

    "participant:update"(p) {
      if (!isObject(p) || typeof p.room !== "string" || !isObject(p.state))
        return err("bad_request", "bad payload");
      if (checkKeys(p, ["room", "state"])) return err("bad_request", "unknown field");
      for (const [k, v] of Object.entries(p.state)) {
        if (!STATE_KEYS.includes(k) || typeof v !== "boolean") return err("bad_request", `bad state key ${k}`);
      }
      const me = socket.data.rooms.get(p.room);
      if (!me) return err("not_found", "not in that room");
      Object.assign(me.state, p.state);
      const room = rooms.get(p.room);
      room.seq += 1;
      const ev = { room: p.room, seq: room.seq, participant: publicParticipant(me) };
      socket.to(p.room).emit("participant:updated", ev);
      return { ok: true, seq: room.seq };
    },
  };

  socket.onAny((event, ...rest) => {
    const ack = typeof rest[rest.length - 1] === "function" ? rest.pop() : null;
    const handler = Object.prototype.hasOwnProperty.call(handlers, event) ? handlers[event] : null;
    let result;
    if (!handler) {
      result = err("bad_request", `unknown event: ${event}`);
    } else {
      try {
        result = handler(rest[0]);
      } catch (e) {
        console.error(`internal error in ${event}:`, e);
        result = err("internal", "internal error");
      }
    }
    if (ack) ack(result);
  });

  socket.on("disconnect", () => {
    for (const roomName of [...socket.data.rooms.keys()]) leaveRoom(socket, roomName, "disconnect");
  });
});

function shutdown() {
  io.close();
  httpServer.close();
  setTimeout(() => process.exit(0), 500).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

httpServer.listen(args.port, args.host, () => {
  console.error(`reference server listening on http://${args.host}:${args.port} (deflate ${args.deflate ? "on" : "off"})`);
});
