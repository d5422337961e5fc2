import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import { RtcError } from './errors';
import { Emitter } from './events';
import { consoleLogger, type Logger } from './log';
import {
  SERVER_EVENT_NAMES,
  type AckOk,
  type RequestName,
  type Requests,
  type ServerEvents,
} from './types';

/** A token, or a function that fetches a fresh one for every (re)connect. */
export type TokenSource = string | (() => string | Promise<string>);

export interface ClientOptions {
  /** JWT sent as `auth.token` in the connect packet. */
  token: TokenSource;
  /** Server origin, e.g. `https://rtc.example.org`; default: the page's origin. */
  url?: string;
  /** Socket.IO path; default `/socket.io/`. */
  path?: string;
  /** Default `['websocket']`; add `'polling'` only behind proxies that need it (single node). */
  transports?: ('websocket' | 'polling')[];
  /** How long an ack may take before the request rejects with `timeout`; default 10 s. */
  requestTimeoutMs?: number;
  /** How long `connect()` waits for the first connection; default 15 s. */
  connectTimeoutMs?: number;
  /** Reconnect automatically after a lost connection; default true. */
  reconnection?: boolean;
  /**
   * Also reconnect when the server closed the connection itself (a node
   * shutting down or restarting does that), after this many ms; default 1000,
   * `null` to stay disconnected. Ignored without `reconnection`.
   */
  serverDisconnectRetryMs?: number | null;
  logger?: Logger;
}

/**
 * - `idle`: never connected; `connecting`: first attempt running
 * - `connected`; `reconnecting`: lost, Socket.IO is retrying
 * - `disconnected`: down and not retrying (refused, or the server closed it)
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
}

export interface ClientEvents extends ServerEvents {
  state: ConnectionStateChange;
}

const DEFAULT_PATH = '/socket.io/';

/**
 * The signaling connection: one Socket.IO socket, requests with acks as
 * promises, server events re-emitted with their wire payloads.
 */
export class SignalingClient extends Emitter<ClientEvents> {
  private socket: Socket | null = null;
  private _state: ConnectionState = 'idle';
  private _lastError: RtcError | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly logger: Logger;
  private readonly requestTimeoutMs: number;

  constructor(private readonly options: ClientOptions) {
    super();
    this.logger = options.logger ?? consoleLogger();
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
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

  /**
   * Connect, resolving once the server accepted the token. Rejects with the
   * server's `RtcError` (`unauthorized`, `bad_request`) when it refuses, with
   * `timeout` when no connection came up in time (the attempt is then stopped),
   * and with `disconnected` when `close()` is called meanwhile.
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
        finish(new RtcError('timeout', `no connection within ${timeoutMs} ms${cause}`));
        socket.disconnect();
      }, timeoutMs);
      if (!socket.active) {
        this.setState('connecting');
        socket.connect();
      }
    });
  }

  /**
   * Send a client -> server event and resolve with its ack result. Rejects
   * with the server's error, `timeout`, or `disconnected` (nothing is queued
   * while the connection is down: stale signaling is worse than none).
   */
  async request<N extends RequestName>(
    event: N,
    payload: Requests[N][0],
    timeoutMs: number = this.requestTimeoutMs,
  ): Promise<AckOk<Requests[N][1]>> {
    const socket = this.socket;
    if (!socket || !socket.connected) {
      throw new RtcError('disconnected', `${event}: not connected`);
    }
    let ack: unknown;
    try {
      ack = await socket.timeout(timeoutMs).emitWithAck(event, payload);
    } catch {
      if (!socket.connected) throw new RtcError('disconnected', `${event}: connection lost`);
      throw new RtcError('timeout', `${event}: no ack within ${timeoutMs} ms`);
    }
    if (typeof ack === 'object' && ack !== null && 'ok' in ack) {
      if (ack.ok === true) return ack as AckOk<Requests[N][1]>;
      if (ack.ok === false && 'error' in ack) {
        throw RtcError.fromWire(ack.error, `${event} failed`);
      }
    }
    throw new RtcError('internal', `${event}: malformed ack`);
  }

  /** Disconnect for good and drop every listener. Idempotent. */
  close(): void {
    if (this._state === 'closed') return;
    const socket = this.socket;
    this.socket = null;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.setState('closed');
    if (socket) {
      socket.removeAllListeners();
      socket.disconnect();
    }
    this.removeAllListeners();
  }

  private createSocket(): Socket {
    const { token } = this.options;
    const options: Partial<ManagerOptions & SocketOptions> = {
      path: this.options.path ?? DEFAULT_PATH,
      transports: this.options.transports ?? ['websocket'],
      reconnection: this.options.reconnection ?? true,
      autoConnect: false,
      // A function, so every reconnect sends a fresh token.
      auth: (cb: (data: object) => void) => {
        Promise.resolve(typeof token === 'function' ? token() : token).then(
          (value) => cb({ token: value }),
          (err: unknown) => {
            this.logger.error('token source failed', err);
            cb({});
          },
        );
      },
      // Each client owns its connection: never share a Manager with another client.
      forceNew: true,
    };
    const socket = this.options.url ? io(this.options.url, options) : io(options);

    socket.on('connect', () => {
      this._lastError = null;
      this.setState('connected');
    });
    socket.on('connect_error', (err: Error & { data?: unknown }) => {
      // `data` is the server's {code, message}; without it the transport failed.
      const error =
        err.data !== undefined
          ? RtcError.fromWire(err.data, err.message)
          : new RtcError('unavailable', err.message || 'cannot reach the server');
      this._lastError = error;
      this.logger.warn('connect_error', error.code, error.message);
      // Socket.IO stops retrying when the server refused the connection.
      this.setState(socket.active ? this.retryState() : 'disconnected', error);
    });
    socket.on('disconnect', (reason: string) => {
      const error = new RtcError('disconnected', reason);
      this._lastError = error;
      if (this._state === 'closed') return;
      if (!socket.active && reason === 'io server disconnect' && this.retryAfterServerDisconnect(socket)) {
        this.setState('reconnecting', error);
        return;
      }
      this.setState(socket.active ? 'reconnecting' : 'disconnected', error);
    });
    for (const name of SERVER_EVENT_NAMES) {
      socket.on(name, (payload: unknown) => {
        if (typeof payload !== 'object' || payload === null) {
          this.logger.warn(`ignoring malformed ${name} event`, payload);
          return;
        }
        this.emit(name, payload as ServerEvents[typeof name]);
      });
    }
    return socket;
  }

  /**
   * Socket.IO treats a server-side disconnect as final; for us it usually is
   * a node going away, so try again (with jitter, so a restarted node is not
   * hit by every client at once). A refused token then ends it for good.
   */
  private retryAfterServerDisconnect(socket: Socket): boolean {
    const delay = this.options.serverDisconnectRetryMs === undefined ? 1000 : this.options.serverDisconnectRetryMs;
    if (delay === null || this.options.reconnection === false) return false;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(
      () => {
        this.retryTimer = null;
        if (this.socket === socket && this._state === 'reconnecting' && !socket.active) socket.connect();
      },
      delay * (0.5 + Math.random()),
    );
    return true;
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
