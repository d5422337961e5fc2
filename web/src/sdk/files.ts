/**
 * File transfers (protocol.md, "File transfers"): offers, acceptance and
 * progress go through the node; the bytes go peer to peer over an
 * `RTCDataChannel` labelled `file:<id>`, or through the node's HTTP relay when
 * no peer-to-peer path opens in time (or the app asks for it).
 *
 * - `client.files` ({@link FileStates}): every `file:state` this client hears,
 *   and observer subscriptions (`subscribe(room)`) for pages that only watch.
 * - `room.files` ({@link RoomFiles}): send files to the room's participants,
 *   receive the ones offered to us.
 */
import type { SignalingClient } from './client';
import { RtcError } from './errors';
import { Emitter, type Unsubscribe } from './events';
import type { Logger } from './log';
import type { Room } from './room';
import { sha256Hex } from './sha256';
import {
  FINAL_FILE_STATES,
  type FileReceiverState,
  type FileStateEvent,
  type ParticipantId,
  type RoomName,
} from './types';

/** Largest binary message on a file channel (protocol.md, "Peer-to-peer framing"). */
export const FILE_CHUNK_BYTES = 16 * 1024;
/** The sender pauses while the channel's `bufferedAmount` is above this. */
export const FILE_BUFFER_HIGH_BYTES = 1024 * 1024;
/** How often a party reports `file:progress` at most. */
export const FILE_PROGRESS_INTERVAL_MS = 100;
/** Default time for the peer-to-peer path to come up before the relay is used. */
export const DEFAULT_P2P_TIMEOUT_MS = 10_000;
/** The data channel label prefix: `file:<id>`. */
export const FILE_CHANNEL_PREFIX = 'file:';

/** What the sender reads from the file at a time (then sent as 16 KiB messages). */
const READ_BLOCK_BYTES = 1024 * 1024;
/** Progress events to the app, at most this often per transfer (state changes go at once). */
const EMIT_INTERVAL_MS = 100;
/** Window of the locally computed rate. */
const RATE_WINDOW_MS = 3000;
/** A `file:<id>` channel for a transfer we do not know (yet) is closed after this. */
const ORPHAN_CHANNEL_MS = 10_000;
const RETRY_MS = 300;
/** A receiver repeats `resume` this often until the sender's first message arrives. */
const RESUME_REPEAT_MS = 1000;
/** A sender replaces an open channel on which no `resume` came within this time. */
const RESUME_WAIT_MS = 2500;

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const MIME_RE = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}$/;

const RANK: Record<FileReceiverState, number> = {
  offered: 0,
  accepted: 1,
  transferring: 2,
  done: 3,
  cancelled: 3,
  failed: 3,
  rejected: 3,
};

export function isFinalFileState(state: string): boolean {
  return (FINAL_FILE_STATES as readonly string[]).includes(state);
}

/** Final for one receiver: nothing more happens to its copy. */
function isSettled(state: string): boolean {
  return state === 'done' || state === 'rejected' || state === 'cancelled' || state === 'failed';
}

/**
 * Merge a new `file:state` (or ack) into what we had: states never go back,
 * progress never decreases, a final state is final, `via: relay` and `url` stick.
 */
export function mergeFileState(old: FileStateEvent | undefined, next: FileStateEvent): FileStateEvent {
  if (!old) return { ...next, receivers: { ...next.receivers } };
  const stale = isFinalFileState(old.state) ? next.state !== old.state : RANK[next.state] < RANK[old.state];
  const merged: FileStateEvent = stale ? { ...old } : { ...next };
  merged.bytes = Math.max(old.bytes, next.bytes);
  merged.sent = Math.max(old.sent, next.sent);
  if (old.via === 'relay' || next.via === 'relay') merged.via = 'relay';
  const url = next.url ?? old.url;
  if (url !== undefined) merged.url = url;
  const receivers: FileStateEvent['receivers'] = { ...old.receivers };
  for (const [id, r] of Object.entries(next.receivers ?? {})) {
    const had = receivers[id];
    if (!had) {
      receivers[id] = { ...r };
      continue;
    }
    const newer = isSettled(had.state) ? false : RANK[r.state] >= RANK[had.state];
    receivers[id] = { state: newer ? r.state : had.state, bytes: Math.max(had.bytes, r.bytes) };
  }
  merged.receivers = receivers;
  return merged;
}

// ---- client.files: states and observer subscriptions ----

export interface FileStatesEvents {
  /** A transfer's state changed (a `file:state`, or an ack that carried one). */
  state: { transfer: FileStateEvent; previous: FileStateEvent | null };
}

/**
 * Every transfer this client hears of (as sender, receiver or subscriber),
 * by id, with the latest merged `file:state`. `subscribe(room)` follows a
 * room's transfers without joining it (needs the room in the token's grants);
 * subscriptions are made again when a new session starts.
 */
export class FileStates extends Emitter<FileStatesEvents> {
  private readonly byId = new Map<string, FileStateEvent>();
  private readonly rooms = new Set<RoomName>();
  private readonly unsubscribes: Unsubscribe[];

  constructor(private readonly client: SignalingClient) {
    super();
    this.unsubscribes = [
      client.on('file:state', (transfer) => {
        this.apply(transfer);
      }),
      client.on('state', ({ state, resumed }) => {
        if (state === 'connected' && resumed === false) this.resubscribe();
      }),
    ];
  }

  /** Follow every transfer of `room`; resolves with its current transfers. */
  async subscribe(room: RoomName): Promise<FileStateEvent[]> {
    const ack = await this.client.request('file:subscribe', { room });
    this.rooms.add(room);
    return (ack.transfers ?? []).map((t) => this.apply(t));
  }

  /** Stop following `room`. */
  async unsubscribe(room: RoomName): Promise<void> {
    this.rooms.delete(room);
    await this.client.request('file:unsubscribe', { room });
  }

  /** The rooms followed with `subscribe`. */
  get subscriptions(): RoomName[] {
    return [...this.rooms];
  }

  get(id: string): FileStateEvent | undefined {
    return this.byId.get(id);
  }

  /** Every transfer heard of (of one room if given), oldest first. */
  list(room?: RoomName): FileStateEvent[] {
    const all = [...this.byId.values()];
    return room === undefined ? all : all.filter((t) => t.room === room);
  }

  /** Merge a state (from an event or an ack) and tell listeners if anything changed. */
  apply(transfer: FileStateEvent): FileStateEvent {
    const previous = this.byId.get(transfer.id) ?? null;
    const merged = mergeFileState(previous ?? undefined, transfer);
    this.byId.set(transfer.id, merged);
    if (!previous || JSON.stringify(previous) !== JSON.stringify(merged)) {
      this.emit('state', { transfer: merged, previous });
    }
    return merged;
  }

  dispose(): void {
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    this.removeAllListeners();
  }

  private resubscribe(): void {
    for (const room of this.rooms) {
      this.client.request('file:subscribe', { room }).then(
        (ack) => {
          for (const t of ack.transfers ?? []) this.apply(t);
        },
        () => undefined,
      );
    }
  }
}

// ---- transfers ----

export type FileDirection = 'outgoing' | 'incoming';
/**
 * A transfer as this side sees it: the node's states (for a receiver, its own
 * receiver state, `rejected` included), plus `preparing` while the sender
 * hashes the file before offering it.
 */
export type FileLocalState = FileReceiverState | 'preparing';

export interface FileProgress {
  id: string;
  state: FileLocalState;
  /** Outgoing: confirmed by the receivers (the node's `bytes`); incoming: received and held here. */
  bytes: number;
  size: number;
  /** Outgoing: the furthest byte put on a data channel, or uploaded to the relay. */
  sent: number;
  /** Bytes per second over the last seconds. */
  rate: number;
  /** Seconds left, or null when unknown. */
  eta: number | null;
  via: 'p2p' | 'relay';
}

export interface FileTransferEvents {
  /** Progress, at most every 100 ms, and with every state change. */
  progress: FileProgress;
  state: { state: FileLocalState; previous: FileLocalState; reason: string | null };
}

/** One data channel session of an outgoing transfer: where it resumed and what it sent. */
export interface ChannelRun {
  receiver: ParticipantId;
  offset: number;
  bytes: number;
}

interface Context {
  client: SignalingClient;
  room: Room;
  logger: Logger;
  changed: (transfer: FileTransfer) => void;
}

/** One file on its way, in either direction. */
export abstract class FileTransfer extends Emitter<FileTransferEvents> {
  abstract readonly direction: FileDirection;
  readonly room: RoomName;
  /** The sender's participant id (ours for outgoing; null until the offer is made). */
  from: ParticipantId | null = null;
  /** The receivers' participant ids (once offered). */
  to: ParticipantId[] = [];
  /** The SHA-256 the sender announced (outgoing: computed before offering). */
  sha256: string | null = null;
  /** Why it ended (`rejected`, `hash mismatch`, `sender left`, ...). */
  reason: string | null = null;
  /** The node's last word on this transfer. */
  wire: FileStateEvent | null = null;

  protected _state: FileLocalState;
  protected _bytes = 0;
  protected _sent = 0;
  protected _via: 'p2p' | 'relay' = 'p2p';
  private samples: [number, number][] = [];
  private emitTimer: ReturnType<typeof setTimeout> | null = null;
  private lastEmit = 0;
  private waiters: { resolve: () => void; reject: (e: RtcError) => void }[] = [];

  protected constructor(
    protected readonly ctx: Context,
    readonly id: string,
    readonly name: string,
    readonly size: number,
    readonly mime: string,
    state: FileLocalState,
  ) {
    super();
    this.room = ctx.room.name ?? '';
    this._state = state;
  }

  get state(): FileLocalState {
    return this._state;
  }

  /** True once nothing more happens here: done, cancelled, failed, rejected. */
  get final(): boolean {
    return isSettled(this._state);
  }

  get bytes(): number {
    return this._bytes;
  }

  get sent(): number {
    return this._sent;
  }

  get via(): 'p2p' | 'relay' {
    return this._via;
  }

  /** Bytes per second over the last seconds (computed here from `bytes`). */
  get rate(): number {
    const now = Date.now();
    const samples = this.samples.filter(([t]) => now - t <= RATE_WINDOW_MS);
    if (samples.length < 2 || this.final) return 0;
    const [t0, b0] = samples[0]!;
    const [t1, b1] = samples[samples.length - 1]!;
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }

  /** Seconds left at the current rate, or null. */
  get eta(): number | null {
    const rate = this.rate;
    if (this._state === 'done') return 0;
    return rate > 0 ? (this.size - this._bytes) / rate : null;
  }

  progress(): FileProgress {
    return {
      id: this.id,
      state: this._state,
      bytes: this._bytes,
      size: this.size,
      sent: this._sent,
      rate: this.rate,
      eta: this.eta,
      via: this._via,
    };
  }

  /** Resolves when the transfer is done here; rejects with an `RtcError` when it is cancelled, rejected or fails. */
  wait(): Promise<void> {
    if (this._state === 'done') return Promise.resolve();
    if (this.final) return Promise.reject(this.endError());
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Cancel the transfer for everyone (`file:cancel`). */
  abstract cancel(reason?: string): Promise<void>;

  /**
   * Close this transfer's data channels as a lost connection would (tests):
   * the sender opens a new one and continues from the receiver's offset.
   */
  abstract interrupt(): void;

  /** @internal The node's state for this transfer. */
  abstract onWire(transfer: FileStateEvent): void;

  /** @internal Stop everything local (the room was left). */
  abstract abort(reason: string): void;

  protected setState(state: FileLocalState, reason?: string | null): void {
    const previous = this._state;
    if (this.final || previous === state) return;
    // States only go forward (an ack may carry an older state than an event already applied).
    if (state !== 'preparing' && previous !== 'preparing' && RANK[state] < RANK[previous]) return;
    if (reason !== undefined && reason !== null) this.reason = reason;
    this._state = state;
    this.emit('state', { state, previous, reason: this.reason });
    this.emitProgress();
    if (state === 'done') {
      for (const w of this.waiters.splice(0)) w.resolve();
    } else if (this.final) {
      const error = this.endError();
      for (const w of this.waiters.splice(0)) w.reject(error);
    }
  }

  protected setBytes(bytes: number): void {
    if (bytes <= this._bytes) return;
    this._bytes = bytes;
    this.touch();
  }

  /** Progress changed: tell the app, at most every 100 ms. */
  protected touch(): void {
    if (this.emitTimer !== null) return;
    const wait = Math.max(0, this.lastEmit + EMIT_INTERVAL_MS - Date.now());
    this.emitTimer = setTimeout(() => {
      this.emitTimer = null;
      this.emitProgress();
    }, wait);
  }

  private emitProgress(): void {
    if (this.emitTimer !== null) clearTimeout(this.emitTimer);
    this.emitTimer = null;
    const now = Date.now();
    this.lastEmit = now;
    this.samples.push([now, this._bytes]);
    this.samples = this.samples.filter(([t]) => now - t <= RATE_WINDOW_MS);
    this.emit('progress', this.progress());
    this.ctx.changed(this);
  }

  protected applyCommon(transfer: FileStateEvent): void {
    this.wire = transfer;
    this.from = transfer.from;
    this.to = [...transfer.to];
    if (transfer.sha256) this.sha256 = transfer.sha256;
    if (transfer.via === 'relay') this._via = 'relay';
    if (transfer.reason !== undefined && isFinalFileState(transfer.state)) this.reason = transfer.reason;
  }

  private endError(): RtcError {
    const why = this.reason ? `${this._state} (${this.reason})` : this._state;
    return new RtcError(this._state === 'failed' ? 'internal' : 'conflict', `transfer ${this.id} ${why}`);
  }
}

export interface SendFileOptions {
  /** One participant of the room; null or absent: every other participant. */
  to?: ParticipantId | null;
  /** Default: the `File`'s name, else `file`. Characters the node refuses are replaced. */
  name?: string;
  /** Default: the blob's type without parameters, else `application/octet-stream`. */
  mime?: string;
  /** The transfer id; default: random. */
  id?: string;
  /** Upload through the node's HTTP relay instead of peer to peer. */
  relay?: boolean;
  /** Use the relay when the peer-to-peer path is not up within this time; default 10 s. */
  p2pTimeoutMs?: number;
}

interface Link {
  receiver: ParticipantId;
  channel: RTCDataChannel | null;
  /** Bumped for every channel and every `resume`: stale pumps and handlers check it. */
  token: number;
  /** A `resume` came on the current channel. */
  established: boolean;
  /** `end` was sent. */
  ended: boolean;
  deadline: ReturnType<typeof setTimeout> | null;
  retry: ReturnType<typeof setTimeout> | null;
  /** A failure to open a channel was logged already. */
  warned: boolean;
}

/** A file we send. Created by `room.files.send()`. */
/**
 * Sends `file:progress` for one party of a transfer: at most every
 * FILE_PROGRESS_INTERVAL_MS, one request in flight, never a count already sent.
 */
class ProgressReporter {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inFlight = false;
  private reported = 0;

  constructor(
    private readonly ctx: Context,
    private readonly id: string,
    /** The count to report now. */
    private readonly current: () => number,
    /** False once reports must stop (final, finishing, relayed, ...). */
    private readonly allowed: () => boolean,
  ) {}

  schedule(): void {
    if (this.timer !== null || this.inFlight || !this.allowed()) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, FILE_PROGRESS_INTERVAL_MS);
  }

  flush(): void {
    this.stop();
    const bytes = this.current();
    if (this.inFlight || !this.allowed() || bytes <= this.reported) return;
    this.inFlight = true;
    this.reported = bytes;
    this.ctx.client
      .request('file:progress', { id: this.id, bytes })
      .catch((err: unknown) => this.ctx.logger.debug(`file:progress ${this.id}`, err))
      .finally(() => {
        this.inFlight = false;
        if (this.current() > this.reported) this.schedule();
      });
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

export class OutgoingTransfer extends FileTransfer {
  readonly direction = 'outgoing' as const;
  /** Every data channel session: the offset the receiver resumed from and the bytes sent on it. */
  readonly runs: ChannelRun[] = [];
  private readonly links = new Map<ParticipantId, Link>();
  private readonly p2pTimeoutMs: number;
  private readonly forceRelay: boolean;
  private relayMode = false;
  private relayStarted = false;
  private upload: AbortController | null = null;
  private _bytesSent = 0;
  private doneSent = false;
  private readonly reporter = new ProgressReporter(
    this.ctx, this.id, () => this._sent,
    () => !this.final && !this.relayMode && !this.doneSent,
  );

  /** @internal */
  constructor(
    ctx: Context,
    readonly blob: Blob,
    id: string,
    name: string,
    mime: string,
    private readonly options: SendFileOptions,
  ) {
    super(ctx, id, name, blob.size, mime, 'preparing');
    this.p2pTimeoutMs = options.p2pTimeoutMs ?? DEFAULT_P2P_TIMEOUT_MS;
    this.forceRelay = options.relay === true;
  }

  /** Bytes put on data channels so far, resends after a resume included. */
  get bytesSent(): number {
    return this._bytesSent;
  }

  /** @internal Hash, then offer. */
  async start(): Promise<void> {
    const { client, room } = this.ctx;
    try {
      this.sha256 = await sha256Hex(this.blob);
      if (this.final) throw new RtcError('conflict', 'cancelled');
      const name = room.name;
      if (name === null || room.state !== 'joined') throw new RtcError('not_found', 'not in a room');
      const ack = await client.request('file:offer', {
        room: name,
        to: this.options.to ?? null,
        id: this.id,
        name: this.name,
        size: this.size,
        mime: this.mime,
        sha256: this.sha256,
      });
      this.onWire(client.files.apply(ack.transfer));
    } catch (err) {
      const error = asRtcError(err);
      this.setState('failed', `${error.code}: ${error.message}`);
      this.stop();
      throw error;
    }
  }

  async cancel(reason?: string): Promise<void> {
    if (this.final) return;
    const wasOffered = this.wire !== null;
    this.setState('cancelled', reason ?? 'cancelled');
    this.stop();
    if (!wasOffered) return;
    await this.ctx.client
      .request('file:cancel', reason === undefined ? { id: this.id } : { id: this.id, reason })
      .then(
        (ack) => this.applyAck(ack),
        (err: unknown) => this.ctx.logger.debug(`file:cancel ${this.id}`, err),
      );
  }

  interrupt(): void {
    for (const link of this.links.values()) link.channel?.close();
  }

  abort(reason: string): void {
    if (this.final) return;
    this.setState('cancelled', reason);
    this.stop();
  }

  onWire(transfer: FileStateEvent): void {
    this.applyCommon(transfer);
    if (transfer.via === 'relay' && transfer.sent > this._sent) this._sent = transfer.sent;
    this.setBytes(transfer.bytes);
    this.touch();
    if (isFinalFileState(transfer.state)) {
      this.setState(transfer.state, transfer.reason ?? null);
      this.stop();
      return;
    }
    if (!this.final) this.setState(transfer.state);
    this.drive();
  }

  /** @internal A peer connection's state changed. */
  onPeerState(receiver: ParticipantId, state: RTCPeerConnectionState): void {
    const link = this.links.get(receiver);
    if (!link || link.ended || this.relayMode || this.final) return;
    if (state === 'failed') this.switchToRelay(`peer connection to ${receiver} failed`);
  }

  // ---- driving ----

  private drive(): void {
    const wire = this.wire;
    if (!wire || this.final) return;
    const active = Object.entries(wire.receivers).filter(
      ([, r]) => r.state === 'accepted' || r.state === 'transferring',
    );
    if (this.forceRelay && active.length > 0) this.switchToRelay('requested');
    if (this.relayMode) return;
    for (const [id, r] of Object.entries(wire.receivers)) {
      if (r.state === 'accepted' || r.state === 'transferring') this.ensureLink(id);
      else if (isSettled(r.state)) this.closeLink(id);
    }
    this.maybeDone();
  }

  private ensureLink(receiver: ParticipantId): void {
    let link = this.links.get(receiver);
    if (!link) {
      link = {
        receiver,
        channel: null,
        token: 0,
        established: false,
        ended: false,
        deadline: null,
        retry: null,
        warned: false,
      };
      this.links.set(receiver, link);
    }
    if (link.ended || link.channel || link.retry) return;
    this.openLink(link);
  }

  private openLink(link: Link): void {
    if (this.relayMode || this.final || link.ended || link.channel) return;
    if (this.ctx.room.mode === 'forward') {
      // No connection with the receiver at all: its media comes through a media worker.
      this.switchToRelay('the room forwards through a media worker');
      return;
    }
    if (link.deadline === null) {
      link.deadline = setTimeout(() => {
        link.deadline = null;
        if (!link.established && !link.ended) {
          this.switchToRelay(`no peer-to-peer path to ${link.receiver} within ${this.p2pTimeoutMs} ms`);
        }
      }, this.p2pTimeoutMs);
    }
    const retry = (): void => {
      if (link.retry !== null) return;
      link.retry = setTimeout(() => {
        link.retry = null;
        this.openLink(link);
      }, RETRY_MS);
    };
    const pc = this.ctx.room.peerConnection(link.receiver);
    const pcState = pc?.connectionState;
    if (pcState === 'failed') {
      this.switchToRelay(`peer connection to ${link.receiver} failed`);
      return;
    }
    // Wait until the peer connection is usable (again); the deadline runs meanwhile.
    if (!pc || pcState !== 'connected') {
      retry();
      return;
    }
    let channel: RTCDataChannel | null;
    try {
      channel = this.ctx.room.createDataChannel(link.receiver, FILE_CHANNEL_PREFIX + this.id, { ordered: true });
    } catch (err) {
      const text = `file ${this.id}: cannot open a data channel to ${link.receiver}`;
      if (link.warned) this.ctx.logger.debug(text, err);
      else this.ctx.logger.warn(text, err);
      link.warned = true;
      channel = null;
    }
    if (!channel) {
      retry();
      return;
    }
    link.token++;
    link.channel = channel;
    link.established = false;
    channel.binaryType = 'arraybuffer';
    channel.bufferedAmountLowThreshold = FILE_BUFFER_HIGH_BYTES;
    channel.onmessage = (event: MessageEvent) => {
      if (link.channel !== channel || typeof event.data !== 'string') return;
      const message = parseMessage(event.data);
      // Only the first `resume` on a channel counts: a receiver repeats it until data comes.
      if (message?.['type'] !== 'resume' || link.established) return;
      const offset = message['offset'];
      if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset > this.size) {
        this.ctx.logger.warn(`file ${this.id}: bad resume offset`, offset);
        channel.close();
        return;
      }
      this.onResume(link, channel, offset);
    };
    channel.onclose = () => {
      if (link.channel !== channel) return;
      link.channel = null;
      this.onLinkClosed(link);
    };
    // Chromium may drop a message that reaches a new channel before it is `open` here: a
    // `resume` that does not come soon is asked for again on a new channel.
    channel.addEventListener(
      'open',
      () => {
        setTimeout(() => {
          if (link.channel !== channel || link.established || channel.readyState !== 'open') return;
          this.ctx.logger.debug(`file ${this.id}: no resume from ${link.receiver}; new channel`);
          channel.close();
        }, RESUME_WAIT_MS);
      },
      { once: true },
    );
  }

  private onResume(link: Link, channel: RTCDataChannel, offset: number): void {
    link.established = true;
    if (link.deadline !== null) clearTimeout(link.deadline);
    link.deadline = null;
    link.ended = false;
    const token = ++link.token;
    const run: ChannelRun = { receiver: link.receiver, offset, bytes: 0 };
    this.runs.push(run);
    this.ctx.logger.debug(`file ${this.id}: sending to ${link.receiver} from ${offset}`);
    void this.pump(link, channel, offset, run, token);
  }

  private async pump(link: Link, channel: RTCDataChannel, offset: number, run: ChannelRun, token: number): Promise<void> {
    const stale = (): boolean =>
      link.token !== token || channel.readyState !== 'open' || this.final || this.relayMode;
    let pos = offset;
    try {
      // The receiver's `resume` can arrive before our side of the channel says `open`.
      if (channel.readyState === 'connecting') await opened(channel);
      while (pos < this.size) {
        if (stale()) return;
        const block = await this.blob.slice(pos, Math.min(this.size, pos + READ_BLOCK_BYTES)).arrayBuffer();
        for (let at = 0; at < block.byteLength; ) {
          if (channel.bufferedAmount > FILE_BUFFER_HIGH_BYTES) await bufferedLow(channel);
          if (stale()) return;
          const n = Math.min(FILE_CHUNK_BYTES, block.byteLength - at);
          channel.send(new Uint8Array(block, at, n));
          at += n;
          pos += n;
          run.bytes += n;
          this._bytesSent += n;
          if (pos > this._sent) {
            this._sent = pos;
            this.touch();
            this.reporter.schedule();
          }
        }
      }
      if (stale()) return;
      channel.send(JSON.stringify({ type: 'end' }));
      link.ended = true;
      this.touch();
      this.maybeDone();
    } catch (err) {
      if (!stale()) this.ctx.logger.warn(`file ${this.id}: sending to ${link.receiver} failed`, err);
      if (link.token === token && channel.readyState === 'open') channel.close();
    }
  }

  /** The channel closed: open a new one when the peer connection is usable; the receiver's offset says where to go on. */
  private onLinkClosed(link: Link): void {
    link.established = false;
    link.token++;
    if (this.final || this.relayMode) return;
    const receiver = this.wire?.receivers[link.receiver];
    if (receiver && isSettled(receiver.state)) return;
    if (link.ended) {
      // Everything was sent; unless the receiver says it is done soon, the end may have been lost.
      link.retry = setTimeout(() => {
        link.retry = null;
        const r = this.wire?.receivers[link.receiver];
        if (this.final || this.relayMode || (r && isSettled(r.state))) return;
        link.ended = false;
        this.openLink(link);
      }, 3000);
      return;
    }
    this.ctx.logger.info(`file ${this.id}: channel to ${link.receiver} closed; reopening`);
    // A deadline still running (no `resume` yet) keeps running; after a drop, openLink starts a new one.
    if (link.retry === null) {
      link.retry = setTimeout(() => {
        link.retry = null;
        this.openLink(link);
      }, RETRY_MS);
    }
  }

  private closeLink(receiver: ParticipantId): void {
    const link = this.links.get(receiver);
    if (!link) return;
    link.ended = true;
    link.token++;
    clearLinkTimers(link);
    const channel = link.channel;
    link.channel = null;
    channel?.close();
  }

  /** Every accepted receiver has had every byte sent (or is settled): tell the node (`file:done` from the sender). */
  private maybeDone(): void {
    const wire = this.wire;
    if (this.doneSent || this.relayMode || !wire || this.final || this.sha256 === null) return;
    let ended = 0;
    for (const [id, r] of Object.entries(wire.receivers)) {
      const link = this.links.get(id);
      if (link?.ended && !isSettled(r.state)) ended++;
      else if (!isSettled(r.state)) return;
    }
    if (ended === 0) return;
    this.doneSent = true;
    this.reporter.stop();
    this.ctx.client.request('file:done', { id: this.id, sha256: this.sha256 }).then(
      (ack) => this.applyAck(ack),
      (err: unknown) => this.ctx.logger.debug(`file:done ${this.id} (sender)`, err),
    );
  }

  // ---- relay ----

  private switchToRelay(why: string): void {
    if (this.relayMode || this.final) return;
    this.ctx.logger.info(`file ${this.id}: using the relay (${why})`);
    this.relayMode = true;
    this._via = 'relay';
    for (const id of this.links.keys()) this.closeLink(id);
    this.touch();
    void this.startRelay();
  }

  private async startRelay(): Promise<void> {
    if (this.relayStarted) return;
    this.relayStarted = true;
    const { client } = this.ctx;
    const controller = new AbortController();
    this.upload = controller;
    try {
      const token = await client.token();
      const response = await fetch(client.httpUrl(`/api/files/${encodeURIComponent(this.id)}`), {
        method: 'PUT',
        body: this.blob,
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/octet-stream' },
        signal: controller.signal,
      });
      if (!response.ok) throw await httpError(response, 'relay upload');
      this._sent = this.size;
      this.touch();
    } catch (err) {
      if (this.final || controller.signal.aborted) return;
      const error = asRtcError(err);
      this.ctx.logger.warn(`file ${this.id}: relay upload failed`, error);
      void this.fail(`relay upload failed: ${error.message}`);
    } finally {
      if (this.upload === controller) this.upload = null;
    }
  }

  private async fail(reason: string): Promise<void> {
    if (this.final) return;
    this.setState('failed', reason);
    this.stop();
    await this.ctx.client.request('file:cancel', { id: this.id, reason }).catch(() => undefined);
  }

  private applyAck(ack: object): void {
    const transfer = (ack as { transfer?: FileStateEvent }).transfer;
    if (transfer && typeof transfer === 'object') this.ctx.client.files.apply(transfer);
  }

  private stop(): void {
    for (const id of this.links.keys()) this.closeLink(id);
    this.reporter.stop();
    this.upload?.abort();
    this.upload = null;
  }
}

/** A file offered to us. `accept()` it (the bytes then arrive by themselves) or `reject()` it. */
export class IncomingTransfer extends FileTransfer {
  readonly direction = 'incoming' as const;
  /** The file once every byte is here and hashed. */
  blob: Blob | null = null;
  /** The SHA-256 of what we received. */
  receivedSha256: string | null = null;
  private chunks: Uint8Array<ArrayBuffer>[] = [];
  private channel: RTCDataChannel | null = null;
  private finishing = false;
  private download: AbortController | null = null;
  private readonly reporter = new ProgressReporter(
    this.ctx, this.id, () => this._bytes, () => !this.final && !this.finishing,
  );
  /** Channels that ever delivered bytes to us. */
  private _channels = 0;

  /** @internal */
  constructor(ctx: Context, transfer: FileStateEvent) {
    super(ctx, transfer.id, transfer.name, transfer.size, transfer.mime, 'offered');
  }

  /** Bytes held so far (what a `resume` asks the sender to continue from). */
  get held(): number {
    return this._bytes;
  }

  /** Data channels the sender opened for this transfer so far. */
  get channels(): number {
    return this._channels;
  }

  async accept(): Promise<void> {
    const ack = await this.ctx.client.request('file:accept', { id: this.id });
    this.onWire(this.ctx.client.files.apply(ack.transfer));
  }

  async reject(): Promise<void> {
    const ack = await this.ctx.client.request('file:reject', { id: this.id });
    this.onWire(this.ctx.client.files.apply(ack.transfer));
  }

  async cancel(reason?: string): Promise<void> {
    if (this.final) return;
    this.setState('cancelled', reason ?? 'cancelled');
    this.stop(true);
    await this.ctx.client
      .request('file:cancel', reason === undefined ? { id: this.id } : { id: this.id, reason })
      .catch((err: unknown) => this.ctx.logger.debug(`file:cancel ${this.id}`, err));
  }

  interrupt(): void {
    this.channel?.close();
  }

  abort(reason: string): void {
    if (this.final) return;
    this.setState('cancelled', reason);
    this.stop(true);
  }

  onWire(transfer: FileStateEvent): void {
    this.applyCommon(transfer);
    const self = this.ctx.room.self?.id;
    const mine = self ? transfer.receivers[self] : undefined;
    if (mine && isSettled(mine.state)) {
      // Our own `done` is ours to set once the hash is checked; the node agreeing is enough too.
      this.setState(mine.state, mine.state === 'done' ? null : (transfer.reason ?? null));
    } else if (isFinalFileState(transfer.state)) {
      this.setState(transfer.state, transfer.reason ?? null);
    } else if (mine && !this.finishing) {
      this.setState(mine.state);
    }
    if (this.final) {
      this.stop(this._state !== 'done');
      return;
    }
    if (transfer.url && mine && (mine.state === 'accepted' || mine.state === 'transferring')) {
      void this.fetchFromRelay(transfer.url);
    }
  }

  /** @internal The sender opened a `file:<id>` channel to us. */
  adoptChannel(channel: RTCDataChannel): void {
    if (this.final || this.finishing || this.download) {
      channel.close();
      return;
    }
    const old = this.channel;
    this.channel = channel;
    this._channels++;
    old?.close();
    channel.binaryType = 'arraybuffer';
    // Chromium may drop a message that reaches the sender's side of a new channel before
    // that side is `open`: say `resume` again until something comes back (the sender
    // acts on the first one only).
    let heard = false;
    let repeat: ReturnType<typeof setTimeout> | null = null;
    const sendResume = (): void => {
      repeat = null;
      if (heard || this.channel !== channel || channel.readyState !== 'open') return;
      channel.send(JSON.stringify({ type: 'resume', offset: this._bytes }));
      repeat = setTimeout(sendResume, RESUME_REPEAT_MS);
    };
    channel.onmessage = (event: MessageEvent) => {
      if (this.channel !== channel) return;
      heard = true;
      this.onData(event.data);
    };
    channel.onclose = () => {
      if (repeat !== null) clearTimeout(repeat);
      if (this.channel !== channel) return;
      this.channel = null;
      this.reporter.flush();
    };
    if (channel.readyState === 'open') sendResume();
    else channel.addEventListener('open', sendResume, { once: true });
  }

  private onData(data: unknown): void {
    if (typeof data === 'string') {
      if (parseMessage(data)?.['type'] === 'end') void this.finish();
      return;
    }
    if (!(data instanceof ArrayBuffer)) {
      this.ctx.logger.warn(`file ${this.id}: unexpected message`, data);
      return;
    }
    this.append(new Uint8Array(data));
  }

  private append(bytes: Uint8Array<ArrayBuffer>): void {
    if (this.finishing || this.final) return;
    if (this._bytes + bytes.byteLength > this.size) {
      void this.fail('more bytes than offered');
      return;
    }
    this.chunks.push(bytes);
    this.setBytes(this._bytes + bytes.byteLength);
    if (this._state === 'accepted') this.setState('transferring');
    this.reporter.schedule();
  }

  /** Every byte is here: hash, then `file:done` with the hash. */
  private async finish(): Promise<void> {
    if (this.finishing || this.final) return;
    if (this._bytes !== this.size) {
      this.ctx.logger.warn(`file ${this.id}: end after ${this._bytes} of ${this.size} bytes`);
      return;
    }
    this.finishing = true;
    this.reporter.stop();
    const blob = new Blob(this.chunks, { type: this.mime });
    this.chunks = [];
    const channel = this.channel;
    this.channel = null;
    channel?.close();
    const hash = await sha256Hex(blob);
    this.blob = blob;
    this.receivedSha256 = hash;
    const mismatch = this.sha256 !== null && hash !== this.sha256;
    try {
      const ack = await this.ctx.client.request('file:done', { id: this.id, sha256: hash });
      const transfer = (ack as { transfer?: FileStateEvent }).transfer;
      if (transfer && typeof transfer === 'object') this.ctx.client.files.apply(transfer);
    } catch (err) {
      this.ctx.logger.warn(`file:done ${this.id}`, err);
    }
    this.setState(mismatch ? 'failed' : 'done', mismatch ? 'hash mismatch' : null);
  }

  private async fetchFromRelay(url: string): Promise<void> {
    if (this.download || this.finishing || this.final) return;
    const controller = new AbortController();
    this.download = controller;
    this._via = 'relay';
    const channel = this.channel;
    this.channel = null;
    channel?.close();
    const { client } = this.ctx;
    try {
      const headers: Record<string, string> = { Authorization: `Bearer ${await client.token()}` };
      if (this._bytes > 0) headers['Range'] = `bytes=${this._bytes}-`;
      const response = await fetch(client.httpUrl(url), { headers, signal: controller.signal });
      if (!response.ok) throw await httpError(response, 'relay download');
      if (response.status !== 206 && this._bytes > 0) {
        // The whole file came back: start over.
        this.chunks = [];
        this._bytes = 0;
      }
      const reader = response.body?.getReader();
      if (!reader) throw new RtcError('internal', 'relay download: no body');
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (this.final) return;
        if (value && value.byteLength > 0) this.append(new Uint8Array(value));
      }
      if (this._bytes !== this.size) throw new RtcError('internal', `relay download: ${this._bytes} of ${this.size} bytes`);
      this.download = null;
      await this.finish();
    } catch (err) {
      if (this.final || controller.signal.aborted) return;
      const error = asRtcError(err);
      this.ctx.logger.warn(`file ${this.id}: relay download failed`, error);
      void this.fail(`relay download failed: ${error.message}`);
    } finally {
      if (this.download === controller) this.download = null;
    }
  }

  private async fail(reason: string): Promise<void> {
    if (this.final) return;
    this.setState('failed', reason);
    this.stop(true);
    await this.ctx.client.request('file:cancel', { id: this.id, reason }).catch(() => undefined);
  }

  private stop(dropData: boolean): void {
    const channel = this.channel;
    this.channel = null;
    channel?.close();
    this.download?.abort();
    this.download = null;
    this.reporter.stop();
    if (dropData) this.chunks = [];
  }
}

// ---- room.files ----

export interface RoomFilesEvents {
  /** A transfer appeared: one we send (from `send()`, while it is prepared) or one offered to us. */
  transfer: { transfer: FileTransfer };
  /** A file is offered to us: `accept()` or `reject()` it. */
  offer: { transfer: IncomingTransfer };
  /** A transfer's progress or state changed (progress at most every 100 ms per transfer). */
  progress: { transfer: FileTransfer; progress: FileProgress };
}

/**
 * File transfers of one room: `send()` a `File` or `Blob` to one participant
 * or to everyone else; incoming offers arrive as `offer` events. Several
 * transfers run at once, each on its own data channel.
 */
export class RoomFiles extends Emitter<RoomFilesEvents> {
  private readonly transfers = new Map<string, FileTransfer>();
  /** `file:<id>` channels that came before we heard of their transfer. */
  private readonly orphans = new Map<string, { channel: RTCDataChannel; from: ParticipantId; timer: ReturnType<typeof setTimeout> }>();
  private readonly unsubscribes: Unsubscribe[];
  private readonly ctx: Context;

  constructor(
    private readonly room: Room,
    logger: Logger,
  ) {
    super();
    this.ctx = {
      client: room.client,
      room,
      logger,
      changed: (transfer) => this.emit('progress', { transfer, progress: transfer.progress() }),
    };
    this.unsubscribes = [
      room.client.files.on('state', ({ transfer }) => this.onState(transfer)),
      room.on('datachannel', ({ participantId, channel }) => this.onChannel(participantId, channel)),
      room.on('peer:state', ({ participantId, state }) => {
        for (const t of this.transfers.values()) {
          if (t instanceof OutgoingTransfer) t.onPeerState(participantId, state);
        }
      }),
      room.on('state', ({ state }) => {
        if (state === 'left' || state === 'closed' || state === 'rejoining') this.abortAll('left the room');
      }),
    ];
  }

  /**
   * Offer `file` to `options.to` (or every other participant) and send it
   * once accepted. The transfer appears at once (`transfer` event, state
   * `preparing` while it is hashed); resolves once the node has the offer.
   * Rejects with an `RtcError` (`bad_request`, `not_found`, `forbidden`, ...).
   */
  async send(file: Blob, options: SendFileOptions = {}): Promise<OutgoingTransfer> {
    if (this.room.state !== 'joined') throw new RtcError('not_found', 'join the room first');
    const id = options.id ?? randomFileId();
    if (!ID_RE.test(id)) throw new RtcError('bad_request', 'id must be 1-64 characters of A-Z a-z 0-9 _ -');
    if (this.transfers.has(id)) throw new RtcError('conflict', `transfer id ${id} is in use`);
    const fileName = typeof File !== 'undefined' && file instanceof File ? file.name : '';
    const name = safeFileName(options.name ?? fileName);
    const mime = safeMime(options.mime ?? file.type);
    const transfer = new OutgoingTransfer(this.ctx, file, id, name, mime, options);
    this.transfers.set(id, transfer);
    this.emit('transfer', { transfer });
    await transfer.start();
    return transfer;
  }

  get(id: string): FileTransfer | undefined {
    return this.transfers.get(id);
  }

  /** Every transfer of this room seen here, oldest first. */
  list(): FileTransfer[] {
    return [...this.transfers.values()];
  }

  /** Stop listening (the room is closing). Transfers still running are aborted locally. */
  dispose(): void {
    this.abortAll('room closed');
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    for (const orphan of this.orphans.values()) {
      clearTimeout(orphan.timer);
      orphan.channel.close();
    }
    this.orphans.clear();
    this.removeAllListeners();
  }

  private onState(state: FileStateEvent): void {
    if (state.room !== this.room.name) return;
    let transfer = this.transfers.get(state.id);
    if (!transfer) {
      const self = this.room.self?.id;
      if (!self || state.from === self || !state.to.includes(self)) return;
      const incoming = new IncomingTransfer(this.ctx, state);
      transfer = incoming;
      this.transfers.set(state.id, incoming);
      incoming.onWire(state);
      this.emit('transfer', { transfer: incoming });
      if (incoming.state === 'offered') this.emit('offer', { transfer: incoming });
      const orphan = this.orphans.get(state.id);
      if (orphan) {
        this.orphans.delete(state.id);
        clearTimeout(orphan.timer);
        if (orphan.from === state.from) incoming.adoptChannel(orphan.channel);
        else orphan.channel.close();
      }
      return;
    }
    transfer.onWire(state);
  }

  private onChannel(from: ParticipantId, channel: RTCDataChannel): void {
    if (!channel.label.startsWith(FILE_CHANNEL_PREFIX)) return;
    const id = channel.label.slice(FILE_CHANNEL_PREFIX.length);
    channel.binaryType = 'arraybuffer';
    const transfer = this.transfers.get(id);
    if (transfer instanceof IncomingTransfer) {
      if (transfer.from === from) transfer.adoptChannel(channel);
      else channel.close();
      return;
    }
    if (transfer) {
      channel.close();
      return;
    }
    this.orphans.get(id)?.channel.close();
    const timer = setTimeout(() => {
      if (this.orphans.get(id)?.channel !== channel) return;
      this.orphans.delete(id);
      channel.close();
    }, ORPHAN_CHANNEL_MS);
    this.orphans.set(id, { channel, from, timer });
  }

  private abortAll(reason: string): void {
    for (const transfer of this.transfers.values()) transfer.abort(reason);
  }
}

// ---- helpers ----

function clearLinkTimers(link: Link): void {
  if (link.deadline !== null) clearTimeout(link.deadline);
  if (link.retry !== null) clearTimeout(link.retry);
  link.deadline = null;
  link.retry = null;
}

/** Resolves when the channel is open, or closed. */
function opened(channel: RTCDataChannel): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearInterval(poll);
      channel.removeEventListener('open', done);
      channel.removeEventListener('close', done);
      resolve();
    };
    const poll = setInterval(() => {
      if (channel.readyState !== 'connecting') done();
    }, 250);
    channel.addEventListener('open', done);
    channel.addEventListener('close', done);
  });
}

/** Resolves when the channel's buffer drained to its low threshold, or it closed. */
function bufferedLow(channel: RTCDataChannel): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearInterval(poll);
      channel.removeEventListener('bufferedamountlow', done);
      channel.removeEventListener('close', done);
      resolve();
    };
    // In case an event is missed (a closing channel may not fire bufferedamountlow).
    const poll = setInterval(() => {
      if (channel.readyState !== 'open' || channel.bufferedAmount <= channel.bufferedAmountLowThreshold) done();
    }, 1000);
    channel.addEventListener('bufferedamountlow', done);
    channel.addEventListener('close', done);
  });
}

function parseMessage(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

async function httpError(response: Response, what: string): Promise<RtcError> {
  const body: unknown = await response.json().catch(() => null);
  const error = typeof body === 'object' && body !== null ? (body as { error?: unknown }).error : undefined;
  if (error !== undefined) return RtcError.fromWire(error, `${what}: HTTP ${response.status}`);
  const code = response.status === 403 ? 'forbidden' : response.status === 404 ? 'not_found' : 'unavailable';
  return new RtcError(code, `${what}: HTTP ${response.status}`);
}

function asRtcError(err: unknown): RtcError {
  if (err instanceof RtcError) return err;
  return new RtcError('internal', err instanceof Error ? `${err.name}: ${err.message}` : String(err));
}

/** 16 characters of `A–Z a–z 0–9 _ -` (96 random bits). */
export function randomFileId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  let text = '';
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, '-').replace(/\//g, '_');
}

/** A name the node accepts: no `/`, `\` or control characters, 1–255 characters, not `.` or `..`. */
export function safeFileName(name: string): string {
  // eslint-disable-next-line no-control-regex
  let clean = name.replace(/[/\\\u0000-\u001f\u007f]/g, '_').trim();
  if (clean.length > 255) {
    const dot = clean.lastIndexOf('.');
    const ext = dot > 0 && clean.length - dot <= 16 ? clean.slice(dot) : '';
    clean = clean.slice(0, 255 - ext.length) + ext;
  }
  return clean === '' || clean === '.' || clean === '..' ? 'file' : clean;
}

/** `type/subtype` without parameters, or `application/octet-stream`. */
export function safeMime(mime: string): string {
  const bare = (mime.split(';')[0] ?? '').trim().toLowerCase();
  return MIME_RE.test(bare) ? bare : 'application/octet-stream';
}
