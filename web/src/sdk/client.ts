import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import { Calls } from './calls';
import { RtcError } from './errors';
import { Emitter } from './events';
import { FileStates } from './files';
import { consoleLogger, type Logger } from './log';
import {
  ROOM_EVENT_NAMES,
  SERVER_EVENT_NAMES,
  type AckOk,
  type AuthExpiringEvent,
  type DrainingEvent,
  type MediaJob,
  type MediaKind,
  type MediaRequest,
  type ParticipantId,
  type RequestName,
  type Requests,
  type RoomEventName,
  type RoomName,
  type ServerEvents,
  type SessionEvent,
} from './types';

/** How long close() waits for the server to confirm `session:end` before disconnecting anyway. */
const SESSION_END_TIMEOUT_MS = 1000;

/** A token, or a function that fetches a fresh one for every (re)connect and every `auth:refresh`. */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /**
   * JWT sent as `auth.token` in the connect packet. A function is called for
   * every (re)connect, and on `auth:expiring` (by default a minute before the
   * connection's token expires) to send the node a fresh token with
   * `auth:refresh`, so the connection outlives its tokens. A fixed string
   * cannot be refreshed: the node ends the connection at the token's expiry and
   * the reconnect is refused (`disconnected`, `unauthorized`).
   */
  token: TokenSource;
  /** Server origin, e.g. `https://rtc.example.org`; default: the page's origin. */
  url?: string;
  /** Socket.IO path; default `/socket.io/`. */
  path?: string;
  /** Default `['websocket']`; add `'polling'` only behind proxies that need it (single node). */
  transports?: ('websocket' | 'polling')[];
  /** How long an ack may take once the request is sent before it rejects with `timeout`; default 10 s. */
  requestTimeoutMs?: number;
  /** How long `connect()` waits for the first connection; default 15 s. */
  connectTimeoutMs?: number;
  /** Reconnect (and resume the session) by itself after a lost connection; default true. */
  reconnection?: boolean;
  /** First reconnect delay; doubles per failed attempt up to `reconnectDelayMaxMs`; each delay is jittered to 50–100 %. Default 500. */
  reconnectDelayMs?: number;
  /** Cap of the reconnect delay; default 5000. */
  reconnectDelayMaxMs?: number;
  /** How long to wait for the `session` event after a connect before assuming a node without sessions; default 2000. */
  sessionTimeoutMs?: number;
  logger?: Logger;
}

/**
 * - `idle`: never connected; `connecting`: first connection being made
 * - `connected`: the session is up (new or resumed)
 * - `reconnecting`: the transport was lost (or the node is draining); retrying, resuming the session
 * - `disconnected`: down for good (the token was refused, or reconnection is off)
 * - `closed`: `close()` was called; final
 */
export type ConnectionState =
  | 'idle'
  | 'connecting'
  | 'connected'
  | 'reconnecting'
  | 'disconnected'
  | 'closed';

export interface ConnectionStateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Why it is down: the `connect_error` (with the server's `{code, message}`) or the disconnect reason. */
  error?: RtcError;
  /**
   * With `connected`: `true` when the previous session was resumed (participant
   * ids and memberships kept), `false` for a new session.
   */
  resumed?: boolean;
}

export interface ClientEvents extends ServerEvents {
  state: ConnectionStateChange;
  /**
   * The session is gone (resume refused: `not_found`, `forbidden`, `conflict`;
   * or the node did not resume it). Every membership is lost; pending requests
   * were rejected with `disconnected`. A new session follows.
   */
  'session:lost': { error: RtcError };
  /** A `ping` round trip completed. */
  rtt: { rtt: number };
}

export interface RequestOptions {
  /** Ack timeout once sent; default `requestTimeoutMs`. */
  timeoutMs?: number;
  /** Queue while the connection is down (default true); `false` rejects with `disconnected` at once. */
  queue?: boolean;
}

const DEFAULT_PATH = '/socket.io/';
/** Resume refusals after which the client starts a new session instead. */
const SESSION_GONE = new Set(['not_found', 'forbidden', 'conflict', 'bad_request']);

interface Pending {
  cid: string;
  event: RequestName;
  payload: Record<string, unknown>;
  timeoutMs: number;
  queue: boolean;
  /** Bumped on each send and on each loss: a stale ack callback checks it. */
  attempt: number;
  timer: ReturnType<typeof setTimeout> | null;
  resolve: (ack: unknown) => void;
  reject: (error: RtcError) => void;
}

/**
 * The signaling connection: one Socket.IO socket and one server session.
 *
 * - Every request carries a `cid`; requests made while the connection is down
 *   are queued and sent in order once the session is back; a request whose ack
 *   was lost with the transport is sent again with the same `cid` (the server
 *   acts on it once).
 * - After a lost transport (or `server:draining`, or a server-side disconnect)
 *   it reconnects with capped exponential backoff and jitter and resumes the
 *   session with `{session, resume, lastSeq}`. If the resume is refused it
 *   starts a new session (`session:lost`, then `connected` with `resumed: false`).
 * - Room events are deduplicated per room by `seq` (from events and from the
 *   `room:join` / `participant:update` acks).
 */
export class SignalingClient extends Emitter<ClientEvents> {
  private socket: Socket | null = null;
  private _state: ConnectionState = 'idle';
  private _lastError: RtcError | null = null;
  private readonly logger: Logger;
  private readonly requestTimeoutMs: number;

  /** Set once the server's `session` event arrived on the current connection. */
  private online = false;
  private session: { id: string; resume: string } | null = null;
  private resumed = false;
  /** Whether the current connect attempt asked to resume. */
  private resuming = false;
  /** The token function failed for the connect in flight (so a refusal is not the node's verdict on us). */
  private tokenFailed = false;
  /** Last seq per room we are a member of (from events and acks). */
  private readonly roomSeq = new Map<RoomName, number>();
  /** Our participant id per room. */
  private readonly selfIds = new Map<RoomName, ParticipantId>();
  private outbox: Pending[] = [];

  private attempts = 0;
  /** Connections that came up so far. */
  private connections = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private sessionTimer: ReturnType<typeof setTimeout> | null = null;
  private drainTimer: ReturnType<typeof setTimeout> | null = null;
  /** Do not reconnect before this time (a draining node asked for it). */
  private notBefore = 0;
  private _rtt: number | null = null;
  private _calls: Calls | null = null;
  private _files: FileStates | null = null;
  private readonly onOnline = (): void => this.reconnectNow();

  constructor(private readonly options: ClientOptions) {
    super();
    this.logger = options.logger ?? consoleLogger();
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    if (typeof window !== 'undefined') window.addEventListener('online', this.onOnline);
  }

  get state(): ConnectionState {
    return this._state;
  }

  get connected(): boolean {
    return this._state === 'connected';
  }

  /** The last connect or disconnect error, if any. */
  get lastError(): RtcError | null {
    return this._lastError;
  }

  /** The current session id (null before the first `session` event). */
  get sessionId(): string | null {
    return this.session?.id ?? null;
  }

  /** Whether the current connection resumed the previous session. */
  get sessionResumed(): boolean {
    return this.resumed;
  }

  /** The last `ping` round trip, ms. */
  get rtt(): number | null {
    return this._rtt;
  }

  /** Requests queued or awaiting their ack. */
  get pendingRequests(): number {
    return this.outbox.length;
  }

  /** Our participant id in `room`, as far as the session knows (join acks and resumes). */
  participantId(room: RoomName): ParticipantId | undefined {
    return this.selfIds.get(room);
  }

  /** The last seq seen per room we are in (what a resume sends as `lastSeq`). */
  lastSeq(): Record<RoomName, number> {
    return Object.fromEntries(this.roomSeq);
  }

  /** Ringing: invite users, accept, decline, cancel, hang up (protocol.md, "Calls"). */
  get calls(): Calls {
    return (this._calls ??= new Calls(this));
  }

  /** File transfer states (`file:state`) and observer subscriptions (protocol.md, "File transfers"). */
  get files(): FileStates {
    return (this._files ??= new FileStates(this));
  }

  /** A token for HTTP calls to the node (the file relay): the string, or a fresh one from the token function. */
  async token(): Promise<string> {
    const { token } = this.options;
    return typeof token === 'function' ? await token() : token;
  }

  /** The absolute URL of `path` (e.g. `/api/files/ID`) on the node: the `url` option's origin, or the page's. */
  httpUrl(path: string): string {
    const base = this.options.url ?? (typeof window !== 'undefined' ? window.location.href : 'http://localhost/');
    return new URL(path, base).toString();
  }

  /**
   * Connect, resolving once the server accepted the token and the session is
   * up. Rejects with the server's `RtcError` (`unauthorized`, `bad_request`)
   * when it refuses, with `timeout` when no connection came up in time (the
   * attempt is then stopped), and with `disconnected` when `close()` is called
   * meanwhile. Transport failures are retried with backoff until then.
   */
  connect(): Promise<void> {
    if (this._state === 'closed') {
      return Promise.reject(new RtcError('disconnected', 'client is closed'));
    }
    if (this._state === 'connected') return Promise.resolve();
    const socket = (this.socket ??= this.createSocket());
    return new Promise<void>((resolve, reject) => {
      const finish = (error?: RtcError): void => {
        clearTimeout(timer);
        off();
        if (error) reject(error);
        else resolve();
      };
      const off = this.on('state', ({ state, error }) => {
        if (state === 'connected') finish();
        else if (state === 'disconnected' || state === 'closed') {
          finish(error ?? new RtcError('disconnected', `connection ${state}`));
        }
      });
      const timeoutMs = this.options.connectTimeoutMs ?? 15_000;
      const timer = setTimeout(() => {
        const cause = this._lastError ? `: ${this._lastError.message}` : '';
        const error = new RtcError('timeout', `no connection within ${timeoutMs} ms${cause}`);
        if (this._state === 'connecting') this.stop(error);
        finish(error);
      }, timeoutMs);
      if (this._state === 'idle' || this._state === 'disconnected') {
        this.attempts = 0;
        this.setState(this._state === 'idle' ? 'connecting' : 'reconnecting');
        socket.connect();
      }
    });
  }

  /**
   * Send a client -> server event with a fresh `cid` and resolve with its ack
   * result. While the connection is down the request waits and is sent, in
   * order, once the session is back; if the session is lost instead it rejects
   * with `disconnected`. Rejects with the server's error, or `timeout` when the
   * ack does not come within `timeoutMs` of sending.
   */
  request<N extends RequestName>(
    event: N,
    payload: Requests[N][0],
    options: RequestOptions | number = {},
  ): Promise<AckOk<Requests[N][1]>> {
    const opts: RequestOptions = typeof options === 'number' ? { timeoutMs: options } : options;
    const state = this._state;
    if (state === 'idle' || state === 'disconnected' || state === 'closed') {
      return Promise.reject(new RtcError('disconnected', `${event}: not connected`));
    }
    const queue = opts.queue ?? true;
    if (!queue && !this.online) {
      return Promise.reject(new RtcError('disconnected', `${event}: not connected`));
    }
    const cid = randomId();
    return new Promise<unknown>((resolve, reject) => {
      const pending: Pending = {
        cid,
        event,
        payload: { ...(payload as object), cid },
        timeoutMs: opts.timeoutMs ?? this.requestTimeoutMs,
        queue,
        attempt: 0,
        timer: null,
        resolve,
        reject,
      };
      this.outbox.push(pending);
      if (this.online) this.send(pending);
    }).then((ack) => this.readAck(event, payload, ack));
  }

  /** Application-level round trip through the node; resolves with the RTT in ms. Not queued. */
  async ping(timeoutMs = 5000): Promise<number> {
    const started = now();
    const ack = await this.request('ping', { t: started }, { timeoutMs, queue: false });
    const rtt = Math.max(0, now() - (typeof ack.t === 'number' ? ack.t : started));
    this._rtt = rtt;
    this.emit('rtt', { rtt });
    return rtt;
  }

  /**
   * Ask the node for a media job in `room` (protocol.md, "Media jobs"): resolves
   * with `{job, kind, worker}` once a worker took it; `worker` is its hidden
   * participant id, to offer to. Rejects with `unavailable` when no worker can
   * do `kind`, `not_found` when we are not in `room`, `forbidden` without the
   * grant. The job's `media:report` and `media:ended` come as client events.
   * For an echo test, `room.echoTest()` does all of it.
   */
  async requestMedia(
    room: RoomName,
    kind: MediaKind,
    options: { duration?: number; timeoutMs?: number } = {},
  ): Promise<MediaJob> {
    const payload: MediaRequest = { room, kind };
    if (options.duration !== undefined) payload.duration = options.duration;
    // The node waits up to 5 s for each worker it tries.
    const timeoutMs = options.timeoutMs ?? Math.max(this.requestTimeoutMs, 15_000);
    const ack = await this.request('media:request', payload, { timeoutMs });
    return { job: ack.job, kind: ack.kind, worker: ack.worker };
  }

  /** End a media job early (`media:release`); the worker is told `released`. */
  async releaseMedia(job: string): Promise<void> {
    await this.request('media:release', { job });
  }

  /**
   * Close the engine.io transport the way a network loss would (no Socket.IO
   * disconnect packet): the server keeps the session for its grace period and
   * this client resumes it. For tests and for moving off a draining node.
   */
  dropTransport(): void {
    const engine = this.socket?.io.engine;
    if (!engine) return;
    this.logger.info('dropping the transport');
    engine.transport.close();
  }

  /** Disconnect for good (the server removes our participants at once) and drop every listener. Idempotent. */
  close(): void {
    if (this._state === 'closed') return;
    const socket = this.socket;
    this.socket = null;
    this.online = false;
    this.clearTimers();
    if (typeof window !== 'undefined') window.removeEventListener('online', this.onOnline);
    this.setState('closed');
    this.rejectAll(new RtcError('disconnected', 'client closed'));
    if (socket) {
      socket.removeAllListeners();
      if (socket.connected) {
        // End the session on purpose (participants leave at once, no grace period), then
        // disconnect: a bare disconnect looks like a lost transport to the server.
        socket.timeout(SESSION_END_TIMEOUT_MS).emit('session:end', {}, () => socket.disconnect());
      } else {
        socket.disconnect();
      }
    }
    this._calls?.dispose();
    this._files?.dispose();
    this.removeAllListeners();
  }

  // ---- requests ----

  private send(pending: Pending): void {
    const socket = this.socket;
    if (!socket) return;
    const attempt = ++pending.attempt;
    if (pending.timer !== null) clearTimeout(pending.timer);
    pending.timer = setTimeout(() => {
      if (pending.attempt !== attempt || !this.remove(pending)) return;
      pending.reject(new RtcError('timeout', `${pending.event}: no ack within ${pending.timeoutMs} ms`));
    }, pending.timeoutMs);
    socket.emit(pending.event, pending.payload, (ack: unknown) => {
      if (pending.attempt !== attempt || !this.remove(pending)) return;
      pending.resolve(ack);
    });
  }

  private remove(pending: Pending): boolean {
    const index = this.outbox.indexOf(pending);
    if (index < 0) return false;
    this.outbox.splice(index, 1);
    if (pending.timer !== null) clearTimeout(pending.timer);
    pending.timer = null;
    return true;
  }

  /** The transport is gone: acks in flight will never come; send those again after the resume. */
  private suspendOutbox(): void {
    for (const pending of [...this.outbox]) {
      pending.attempt++;
      if (pending.timer !== null) clearTimeout(pending.timer);
      pending.timer = null;
      if (!pending.queue && this.remove(pending)) {
        pending.reject(new RtcError('disconnected', `${pending.event}: connection lost`));
      }
    }
  }

  private flushOutbox(): void {
    for (const pending of [...this.outbox]) {
      if (this.outbox.includes(pending)) this.send(pending);
    }
  }

  private rejectAll(error: RtcError): void {
    const outbox = this.outbox;
    this.outbox = [];
    for (const pending of outbox) {
      pending.attempt++;
      if (pending.timer !== null) clearTimeout(pending.timer);
      pending.reject(new RtcError(error.code, `${pending.event}: ${error.message}`));
    }
  }

  private readAck<N extends RequestName>(event: N, payload: Requests[N][0], ack: unknown): AckOk<Requests[N][1]> {
    if (typeof ack === 'object' && ack !== null && 'ok' in ack) {
      if (ack.ok === true) {
        const ok = ack as AckOk<Requests[N][1]>;
        this.trackAck(event, payload, ok);
        return ok;
      }
      if (ack.ok === false && 'error' in ack) {
        throw RtcError.fromWire(ack.error, `${event} failed`);
      }
    }
    throw new RtcError('internal', `${event}: malformed ack`);
  }

  /** Acks carry the seq of the room event the request caused (which is not sent back to us). */
  private trackAck(event: RequestName, payload: unknown, ack: object): void {
    const record = ack as Record<string, unknown>;
    const request = payload as Record<string, unknown>;
    const room = typeof record['room'] === 'string' ? record['room'] : request['room'];
    if (typeof room !== 'string') return;
    const seq = record['seq'];
    if (event === 'room:join' && typeof seq === 'number') {
      this.roomSeq.set(room, Math.max(seq, this.pendingSeq.get(room) ?? 0));
      this.pendingSeq.delete(room);
      const self = record['self'] as { id?: unknown } | undefined;
      if (typeof self?.id === 'string') this.selfIds.set(room, self.id);
    } else if (event === 'participant:update' && typeof seq === 'number') {
      this.roomSeq.set(room, Math.max(seq, this.roomSeq.get(room) ?? 0));
    } else if (event === 'room:leave') {
      this.forgetRoom(room);
    }
  }

  /** Highest seq seen for a room whose `room:join` ack has not come yet. */
  private readonly pendingSeq = new Map<RoomName, number>();

  private forgetRoom(room: RoomName): void {
    this.roomSeq.delete(room);
    this.selfIds.delete(room);
    this.pendingSeq.delete(room);
  }

  // ---- events ----

  /** False for a room event we already have (seq at or below the room's last). */
  private acceptRoomEvent(name: RoomEventName, payload: Record<string, unknown>): boolean {
    const room = payload['room'];
    const seq = payload['seq'];
    if (typeof room !== 'string' || typeof seq !== 'number') return true;
    const last = this.roomSeq.get(room);
    if (last === undefined) {
      this.pendingSeq.set(room, Math.max(seq, this.pendingSeq.get(room) ?? 0));
      return true;
    }
    if (seq <= last) {
      this.logger.debug(`dropping duplicate ${name} ${room}#${seq} (have ${last})`);
      return false;
    }
    // A gap is normal when the missing seq is our own request whose ack is still coming
    // (e.g. resent after a resume: the replay comes before the ack).
    if (seq !== last + 1) this.logger.debug(`${name} ${room}: seq ${seq} after ${last}`);
    this.roomSeq.set(room, seq);
    if (name === 'participant:left' && payload['id'] === this.selfIds.get(room)) this.forgetRoom(room);
    return true;
  }

  private onSession(event: SessionEvent): void {
    if (this.sessionTimer !== null) clearTimeout(this.sessionTimer);
    this.sessionTimer = null;
    const resumed = event.resumed === true && this.resuming;
    if (!resumed && this.session !== null) {
      this.loseSession(new RtcError('not_found', 'the session was not resumed'));
    }
    this.session = { id: event.session, resume: event.resume };
    if (resumed) {
      const rooms = new Map((event.rooms ?? []).map((r) => [r.room, r] as const));
      for (const room of [...this.roomSeq.keys(), ...this.selfIds.keys()]) {
        if (!rooms.has(room)) this.forgetRoom(room);
      }
      for (const r of rooms.values()) this.selfIds.set(r.room, r.id);
    }
    this.goOnline(resumed);
  }

  /** A node without sessions: treat the connection as a new session that cannot be resumed. */
  private onNoSession(): void {
    this.sessionTimer = null;
    this.logger.warn('no session event from the node: resume is not available');
    if (this.session !== null || this.connections > 0) {
      this.loseSession(new RtcError('not_found', 'the node has no sessions'));
    }
    this.session = null;
    this.goOnline(false);
  }

  private goOnline(resumed: boolean): void {
    this.online = true;
    this.connections++;
    this.resumed = resumed;
    this.attempts = 0;
    this.notBefore = 0;
    this._lastError = null;
    // Requests first (in their order), then the state: a room reacting to it queues behind them.
    this.flushOutbox();
    const previous = this._state;
    this._state = 'connected';
    this.emit('state', { state: 'connected', previous, resumed });
  }

  /** The session and every membership are gone; the requests made for it cannot be acted on. */
  private loseSession(error: RtcError): void {
    this.logger.info(`session lost (${error.code}: ${error.message}); starting a new one`);
    this.session = null;
    this.roomSeq.clear();
    this.selfIds.clear();
    this.pendingSeq.clear();
    this.rejectAll(new RtcError('disconnected', `session lost (${error.code})`));
    this.emit('session:lost', { error });
  }

  private onDraining(event: DrainingEvent): void {
    const wait = typeof event.reconnectIn === 'number' && event.reconnectIn >= 0 ? event.reconnectIn : 1000;
    this.logger.info(`node draining: moving in ${wait} ms`);
    this.notBefore = Date.now() + wait;
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    // Jittered so that a node's clients do not all come back at once.
    this.drainTimer = setTimeout(
      () => {
        this.drainTimer = null;
        if (this.online) this.dropTransport();
      },
      wait * (1 + 0.5 * Math.random()),
    );
  }

  /**
   * The node is about to end the connection at its token's expiry: send it a
   * fresh token from the token function. If that fails the node disconnects at
   * the expiry, and the reconnect (with a fresh token) resumes the session.
   */
  private async refreshToken(event: AuthExpiringEvent): Promise<void> {
    if (typeof this.options.token !== 'function') {
      this.logger.warn(`the token expires at ${event.expiresAt} (Unix ms) and a fixed token cannot be refreshed`);
      return;
    }
    try {
      await this.request('auth:refresh', { token: await this.token() });
    } catch (err) {
      this.logger.warn(`token refresh failed; the connection ends at ${event.expiresAt} (Unix ms)`, err);
    }
  }

  // ---- connection ----

  private createSocket(): Socket {
    const { token } = this.options;
    const options: Partial<ManagerOptions & SocketOptions> = {
      path: this.options.path ?? DEFAULT_PATH,
      transports: this.options.transports ?? ['websocket'],
      // Reconnection (and resume) is ours: Socket.IO's stops after a server disconnect or a refusal.
      reconnection: false,
      autoConnect: false,
      // A function, so every (re)connect sends a fresh token and the current resume state.
      auth: (cb: (data: object) => void) => {
        Promise.resolve(typeof token === 'function' ? token() : token).then(
          (value) => {
            this.tokenFailed = false;
            cb(this.authPayload(value));
          },
          (err: unknown) => {
            this.logger.error('token source failed', err);
            this.tokenFailed = true;
            cb(this.authPayload(undefined));
          },
        );
      },
      // Each client owns its connection: never share a Manager with another client.
      forceNew: true,
    };
    const socket = this.options.url ? io(this.options.url, options) : io(options);

    socket.on('connect', () => {
      // The session event comes first on an accepted connection; give old nodes a moment.
      if (this.sessionTimer !== null) clearTimeout(this.sessionTimer);
      this.sessionTimer = setTimeout(() => this.onNoSession(), this.options.sessionTimeoutMs ?? 2000);
    });
    socket.on('connect_error', (err: Error & { data?: unknown }) => this.onConnectError(err));
    socket.on('disconnect', (reason: string) => this.onDisconnect(reason));
    for (const name of SERVER_EVENT_NAMES) {
      socket.on(name, (payload: unknown) => {
        if (typeof payload !== 'object' || payload === null) {
          this.logger.warn(`ignoring malformed ${name} event`, payload);
          return;
        }
        if (name === 'session') {
          this.onSession(payload as SessionEvent);
        } else if (name === 'server:draining') {
          this.onDraining(payload as DrainingEvent);
        } else if (name === 'auth:expiring') {
          void this.refreshToken(payload as AuthExpiringEvent);
        } else if (name === 'auth:expired') {
          this.logger.info('the token expired without a refresh: the node disconnects');
        } else if ((ROOM_EVENT_NAMES as readonly string[]).includes(name)) {
          if (!this.acceptRoomEvent(name as RoomEventName, payload as Record<string, unknown>)) return;
        }
        this.emit(name, payload as ServerEvents[typeof name]);
      });
    }
    return socket;
  }

  private authPayload(token: string | undefined): Record<string, unknown> {
    const auth: Record<string, unknown> = token === undefined ? {} : { token };
    this.resuming = this.session !== null;
    if (this.session) {
      const lastSeq: Record<RoomName, number> = Object.fromEntries(this.roomSeq);
      // A join whose ack was lost may have been acted on: ask for that room's
      // history too (the room drops what precedes its join seq), or the events
      // between the join and the resume would be missing.
      for (const pending of this.outbox) {
        const room = pending.payload['room'];
        if (pending.event === 'room:join' && typeof room === 'string' && !(room in lastSeq)) lastSeq[room] = 0;
      }
      auth['session'] = this.session.id;
      auth['resume'] = this.session.resume;
      auth['lastSeq'] = lastSeq;
    }
    return auth;
  }

  private onConnectError(err: Error & { data?: unknown }): void {
    if (this._state === 'closed' || this._state === 'disconnected') return;
    // `data` is the server's {code, message}; without it the transport failed.
    const refused = err.data !== undefined;
    const error = refused
      ? RtcError.fromWire(err.data, err.message)
      : new RtcError('unavailable', err.message || 'cannot reach the server');
    this._lastError = error;
    this.logger.warn('connect_error', error.code, error.message);
    if (refused && this.resuming && SESSION_GONE.has(error.code)) {
      // The session cannot be resumed: start a new one right away.
      this.loseSession(error);
      this.setState(this.retryState(), error);
      this.scheduleReconnect(0);
      return;
    }
    if (refused && this.tokenFailed && this.resuming) {
      // Our token function failed (its backend is down?), not the session: keep it and
      // retry with backoff, as for a lost transport.
      this.setState(this.retryState(), new RtcError('unavailable', 'the token function failed'));
      this.scheduleReconnect();
      return;
    }
    if (refused && error.code !== 'unavailable' && error.code !== 'rate_limited' && error.code !== 'internal') {
      // The token (or the request) is refused: retrying would not help.
      this.stop(error);
      return;
    }
    this.setState(this.retryState(), error);
    this.scheduleReconnect();
  }

  private onDisconnect(reason: string): void {
    if (this.sessionTimer !== null) clearTimeout(this.sessionTimer);
    this.sessionTimer = null;
    this.online = false;
    if (this._state === 'closed' || this._state === 'disconnected') return;
    if (reason === 'io client disconnect') return; // ours: stop() or close()
    // Anything else (transport closed or failed, ping timeout, the server
    // closing us) is a lost transport: the session waits for us to resume it.
    const error = new RtcError('disconnected', reason);
    this._lastError = error;
    this.suspendOutbox();
    this.setState(this.retryState(), error);
    this.scheduleReconnect();
  }

  private scheduleReconnect(delayMs?: number): void {
    if (this.options.reconnection === false) {
      this.stop(this._lastError ?? new RtcError('disconnected', 'connection lost'));
      return;
    }
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    const base = this.options.reconnectDelayMs ?? 500;
    const cap = this.options.reconnectDelayMaxMs ?? 5000;
    const backoff = Math.min(cap, base * 2 ** Math.min(this.attempts, 16)) * (0.5 + 0.5 * Math.random());
    this.attempts++;
    const delay = Math.max(delayMs ?? backoff, this.notBefore - Date.now(), 0);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.attemptConnect();
    }, delay);
  }

  private attemptConnect(): void {
    const socket = this.socket;
    if (!socket || socket.connected) return;
    if (this._state !== 'connecting' && this._state !== 'reconnecting') return;
    socket.connect();
  }

  /** The browser says the network is back: try now instead of waiting out the backoff. */
  private reconnectNow(): void {
    if (this._state !== 'reconnecting' || this.reconnectTimer === null) return;
    if (Date.now() < this.notBefore) return;
    this.attempts = 0;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.attemptConnect();
  }

  /** Give up: down for good, pending requests rejected. `connect()` may start over. */
  private stop(error: RtcError): void {
    this.online = false;
    this.clearTimers();
    this._lastError = error;
    const socket = this.socket;
    if (socket?.active) socket.disconnect();
    this.rejectAll(new RtcError('disconnected', error.message));
    this.setState('disconnected', error);
  }

  private clearTimers(): void {
    for (const timer of [this.reconnectTimer, this.sessionTimer, this.drainTimer]) {
      if (timer !== null) clearTimeout(timer);
    }
    this.reconnectTimer = null;
    this.sessionTimer = null;
    this.drainTimer = null;
  }

  private retryState(): ConnectionState {
    return this._state === 'idle' || this._state === 'connecting' ? 'connecting' : 'reconnecting';
  }

  private setState(state: ConnectionState, error?: RtcError): void {
    const previous = this._state;
    if (previous === state && !error) return;
    this._state = state;
    this.emit('state', error ? { state, previous, error } : { state, previous });
  }
}

/** 16 random bytes, base64url: a request's `cid`. */
export function randomId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}
