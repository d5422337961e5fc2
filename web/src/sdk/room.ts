import type { ConnectionStateChange, SignalingClient } from './client';
import { EchoTest, type EchoTestOptions } from './echo';
import { RtcError } from './errors';
import { Emitter, type Unsubscribe } from './events';
import { RoomFiles } from './files';
import { ForwardedMedia, type ForwardPc } from './forward';
import { consoleLogger, type Logger } from './log';
import { Peer, type PeerConnectionState, type PeerMessage, type PeerRole } from './peer';
import { RecordingUpstream } from './recording';
import {
  EMPTY_STATE,
  type ActiveRecording,
  type IceServer,
  type JoinRequest,
  type LeaveReason,
  type ParticipantId,
  type ParticipantJoinedEvent,
  type ParticipantLeftEvent,
  type ParticipantState,
  type ParticipantUpdatedEvent,
  type PresenceState,
  type RecordingInfo,
  type RecordingStateEvent,
  type RoomEventName,
  type RoomMode,
  type RoomModeEvent,
  type RoomName,
  type SelfInfo,
  type ServerEvents,
  type SignalEvent,
  type SignalPc,
  type UserId,
} from './types';

export interface RoomOptions {
  /** `relay` forces every peer connection through TURN. Default `all`. */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /**
   * When the session is lost (its resume refused), join again as a new
   * participant once the client has a new session. Default true. (A resumed
   * session keeps the membership: nothing to do.)
   */
  rejoin?: boolean;
  /** Restart ICE on every peer when the browser fires `online` (a network change). Default true. */
  restartIceOnOnline?: boolean;
  logger?: Logger;
}

export interface JoinOptions {
  /** Display name for this join; default: the token's `name`. */
  name?: string;
  /** Free JSON stored with the participant (at most 2 KiB serialized). */
  meta?: Record<string, unknown>;
}

/**
 * - `idle`: not joined yet; `joining`: `room:join` sent
 * - `joined` (also while the client reconnects and resumes the session: the
 *   membership and the peer connections are kept)
 * - `rejoining`: the session was lost; the room joins again, as a new participant, once the client has a new one
 * - `left`: `leave()` was called or the connection is gone for good (see `error`)
 * - `closed`: `close()` was called; final
 */
export type RoomState = 'idle' | 'joining' | 'joined' | 'rejoining' | 'left' | 'closed';

/** A remote participant as the room tracks it. Read-only to the app. */
export interface RemoteParticipant {
  readonly id: ParticipantId;
  readonly user: UserId;
  readonly name: string;
  readonly state: Readonly<ParticipantState>;
  /** Their signaling presence: `reconnecting` while their transport is lost (their media may still flow). */
  readonly connection: PresenceState;
  /** Our perfect-negotiation role toward them. */
  readonly polite: boolean;
  /** Their media, once a first track arrived. */
  readonly stream: MediaStream | null;
  readonly connectionState: PeerConnectionState;
}

export interface JoinInfo {
  room: RoomName;
  seq: number;
  self: SelfInfo;
  participants: RemoteParticipant[];
  iceServers: IceServer[];
  /** The room's running recording (we already send our media to it), or null. */
  recording: ActiveRecording | null;
  /** How the room's media flows (`forward`: through a media worker; we did not offer to anyone). */
  mode: RoomMode;
}

/** Why a participant is no longer listed: theirs (`leave`, `disconnect`) or ours (`local`). */
export type RemovalReason = LeaveReason | 'local';

export interface RoomEvents {
  state: { state: RoomState; previous: RoomState; error?: RtcError };
  'participant:joined': { participant: RemoteParticipant };
  'participant:left': { participant: RemoteParticipant; reason: RemovalReason };
  'participant:updated': {
    participant: RemoteParticipant;
    previous: Readonly<ParticipantState>;
    previousConnection: PresenceState;
  };
  /**
   * The server's view of ourselves changed (server-caused events reach their
   * subject too, e.g. our `connection` after a resume).
   */
  'self:updated': { self: SelfInfo; state: Readonly<ParticipantState>; connection: PresenceState };
  /** A remote track arrived; `stream` is the participant's one stream holding all their tracks. */
  track: { participantId: ParticipantId; track: MediaStreamTrack; stream: MediaStream };
  trackended: { participantId: ParticipantId; track: MediaStreamTrack; stream: MediaStream };
  /** A peer connection's `connectionState` changed. */
  'peer:state': { participantId: ParticipantId; state: PeerConnectionState };
  /** An ICE restart started toward a participant (`local`: ours; `remote`: they asked for it). */
  'peer:icerestart': { participantId: ParticipantId; origin: 'local' | 'remote'; reason: string };
  /** Our own published state changed. */
  'local:state': { state: Readonly<ParticipantState> };
  /** The signaling connection's state changed (mirrors the client's `state` event). */
  'connection:state': ConnectionStateChange;
  /** A participant opened a data channel toward us (file transfers use labels `file:<id>`). */
  datachannel: { participantId: ParticipantId; channel: RTCDataChannel };
  /**
   * The room's recording started, moved to another worker, or ended; or our
   * membership ended while it ran. `recording` is `room.recording` now (null: not
   * recorded), `state` what the node said (the join ack's state or a
   * `recording:state`; null when we left: the recording may go on without us).
   */
  'recording:state': {
    recording: Readonly<ActiveRecording> | null;
    previous: Readonly<ActiveRecording> | null;
    state: Readonly<RecordingInfo> | null;
  };
  /** The connection sending our media to the recording worker changed state (`closed` once closed). */
  'recording:connection': { worker: ParticipantId; state: PeerConnectionState };
  /**
   * The room's media changed path (protocol.md, "Forwarding (group calls)"):
   * `forward` (through `worker`; `moved`: it took over from a worker that
   * died) or `mesh`. Participants, their streams and `track` events go on as
   * before; only the connections under them change. Also sent when joining a
   * forwarded room, and back to `mesh` when our membership ends.
   */
  mode: { mode: RoomMode; previous: RoomMode; worker: ParticipantId | null; moved: boolean };
  /** One of the two connections to the forwarding worker changed state (`closed` once closed). */
  'forward:connection': { worker: ParticipantId; pc: ForwardPc; state: PeerConnectionState };
}

/** A worker may take up to 5 s to accept, and the node may try more than one. */
const RECORDING_START_TIMEOUT_MS = 15_000;

interface MutableParticipant {
  id: ParticipantId;
  user: UserId;
  name: string;
  state: ParticipantState;
  connection: PresenceState;
  polite: boolean;
  stream: MediaStream | null;
  connectionState: PeerConnectionState;
}

type RoomServerEvents = Pick<ServerEvents, RoomEventName | 'signal'>;
type Buffered = { [K in keyof RoomServerEvents]: { event: K; payload: RoomServerEvents[K] } }[keyof RoomServerEvents];

/**
 * One joined room: the participant list, presence, and one peer connection per
 * remote participant, or, while the room forwards, two connections with its
 * media worker instead (the app sees the same participants and streams). The
 * room owns its connections and closes them; it does not own the client nor
 * the local stream, which the app may share or reuse.
 */
export class Room extends Emitter<RoomEvents> {
  private readonly logger: Logger;
  private readonly participantsById = new Map<ParticipantId, MutableParticipant>();
  private readonly peersById = new Map<ParticipantId, Peer>();
  /** Ids that left: a late signal from them must not resurrect a peer. */
  private readonly departed = new Set<ParticipantId>();
  /**
   * Media workers' hidden participants: their signals go to our connection to
   * that worker (the echo test, the recording upstream), never to a room peer.
   */
  private readonly workers = new Set<ParticipantId>();
  private echo: EchoTest | null = null;
  private _recording: ActiveRecording | null = null;
  /** Our media to the recording worker, while the room is recorded. */
  private upstream: RecordingUpstream | null = null;
  private _mode: RoomMode = 'mesh';
  /** While the room forwards: our two connections to its worker (then there are no peers). */
  private forwarded: ForwardedMedia | null = null;
  private echoRequesting = false;
  private readonly unsubscribes: Unsubscribe[];
  private _state: RoomState = 'idle';
  private _name: RoomName | null = null;
  private joinRequest: JoinRequest | null = null;
  private _self: SelfInfo | null = null;
  private _seq = 0;
  private iceServers: IceServer[] = [];
  private localStream: MediaStream | null = null;
  private localState: ParticipantState = { ...EMPTY_STATE };
  /** Events that arrived while `room:join` was pending, replayed after its ack. */
  private buffered: Buffered[] = [];
  private joining: Promise<unknown> | null = null;
  private _selfConnection: PresenceState = 'connected';
  private _files: RoomFiles | null = null;
  private readonly onOnline = (): void => {
    if (this._state === 'joined') this.restartIce(undefined, 'network online');
  };

  constructor(
    readonly client: SignalingClient,
    private readonly options: RoomOptions = {},
  ) {
    super();
    this.logger = options.logger ?? consoleLogger();
    this.unsubscribes = [
      client.on('participant:joined', (e) => this.onServerEvent('participant:joined', e)),
      client.on('participant:left', (e) => this.onServerEvent('participant:left', e)),
      client.on('participant:updated', (e) => this.onServerEvent('participant:updated', e)),
      client.on('recording:state', (e) => this.onServerEvent('recording:state', e)),
      client.on('room:mode', (e) => this.onServerEvent('room:mode', e)),
      client.on('signal', (e) => this.onServerEvent('signal', e)),
      client.on('state', (change) => this.onConnectionState(change)),
      client.on('session:lost', ({ error }) => this.onSessionLost(error)),
    ];
    if (options.restartIceOnOnline !== false && typeof window !== 'undefined') {
      window.addEventListener('online', this.onOnline);
      this.unsubscribes.push(() => window.removeEventListener('online', this.onOnline));
    }
  }

  get state(): RoomState {
    return this._state;
  }

  /** The room name once `join` was called. */
  get name(): RoomName | null {
    return this._name;
  }

  /** Our own participant, once joined. */
  get self(): SelfInfo | null {
    return this._self;
  }

  /** The last room event seq seen (or our own update's). */
  get seq(): number {
    return this._seq;
  }

  get localParticipantState(): Readonly<ParticipantState> {
    return this.localState;
  }

  /** The remote participants, by id (a snapshot). */
  get participants(): ReadonlyMap<ParticipantId, RemoteParticipant> {
    return new Map(this.participantsById);
  }

  /** The peer connection toward one participant (none while the room forwards), for stats and debugging. */
  peerConnection(id: ParticipantId): RTCPeerConnection | undefined {
    return this.peersById.get(id)?.pc;
  }

  /**
   * How the room's media flows: `mesh` (a peer connection per participant) or
   * `forward` (two connections with a media worker, none with participants).
   * `mesh` while not joined.
   */
  get mode(): RoomMode {
    return this._mode;
  }

  /** The forwarding worker's hidden participant id while the room forwards, else null. */
  get forwardWorker(): ParticipantId | null {
    return this.forwarded?.worker ?? null;
  }

  /**
   * Our two connections to the forwarding worker (`up`: our media to it,
   * `down`: everyone else's from it), or null while the room meshes.
   */
  forwardConnections(): { up: RTCPeerConnection; down: RTCPeerConnection } | null {
    const forwarded = this.forwarded;
    if (!forwarded || forwarded.closed) return null;
    return { up: forwarded.upConnection, down: forwarded.downConnection };
  }

  /**
   * The receivers of one participant's media, whatever the mode: their peer
   * connection's, or the forwarded `down` connection's that carry their live
   * tracks. `receiver.getStats()` gives that participant's `inbound-rtp`.
   */
  receivers(participantId: ParticipantId): RTCRtpReceiver[] {
    if (this.forwarded) return this.forwarded.receivers(participantId);
    const peer = this.peersById.get(participantId);
    return peer && !peer.closed ? peer.pc.getReceivers() : [];
  }

  /** Our signaling presence as the server last told us (`connected` unless a replay said otherwise). */
  get selfConnection(): PresenceState {
    return this._selfConnection;
  }

  /**
   * Restart ICE toward one participant, or toward everyone: new candidates
   * through a new offer, e.g. after a network change. Media keeps flowing over
   * the old path until the new one is up.
   */
  restartIce(participantId?: ParticipantId, reason = 'requested'): void {
    const peers = participantId === undefined ? [...this.peersById.values()] : [this.peersById.get(participantId)];
    for (const peer of peers) peer?.restartIce(reason);
    const upstream = this.upstream;
    if (upstream && (participantId === undefined || participantId === upstream.worker)) upstream.restartIce(reason);
    const forwarded = this.forwarded;
    if (forwarded && (participantId === undefined || participantId === forwarded.worker)) forwarded.restartIce(reason);
  }

  /**
   * Open a data channel toward one participant (null when there is no peer
   * connection toward them). Throws what `createDataChannel` throws.
   */
  createDataChannel(participantId: ParticipantId, label: string, init?: RTCDataChannelInit): RTCDataChannel | null {
    const peer = this.peersById.get(participantId);
    if (!peer || peer.closed) return null;
    return peer.createDataChannel(label, init);
  }

  /** File transfers in this room: `files.send(file)`, incoming offers (protocol.md, "File transfers"). */
  get files(): RoomFiles {
    return (this._files ??= new RoomFiles(this, this.logger));
  }

  /**
   * Start an echo test (protocol.md, "Media jobs"): a media worker sends our
   * own media back and, after `duration` seconds, reports what it saw. Resolves
   * once a worker took the job (the test then connects by itself); rejects with
   * `unavailable` when no worker runs, `not_found` before joining, `conflict`
   * while another echo test of this room runs. One at a time per room: the
   * worker tells its jobs apart by requester.
   *
   *     const test = await room.echoTest({ duration: 5 });
   *     video.srcObject = test.stream;          // the echoed media
   *     const report = await test.wait();       // verdict, reasons, numbers
   *     await test.stop();                      // releases the job, closes the connection
   */
  async echoTest(options: EchoTestOptions = {}): Promise<EchoTest> {
    const room = this._name;
    if (this._state !== 'joined' || room === null) throw new RtcError('not_found', 'join the room first');
    if (this.echo || this.echoRequesting) throw new RtcError('conflict', 'an echo test is already running');
    const self = this._self?.id;
    this.echoRequesting = true;
    let job;
    try {
      job = await this.client.requestMedia(
        room,
        'echo',
        options.duration !== undefined ? { duration: options.duration } : {},
      );
    } finally {
      this.echoRequesting = false;
    }
    if (this._state !== 'joined' || this._name !== room || this._self?.id !== self) {
      // Left (or rejoined as someone else) meanwhile: the node ends the job as `requester_left`.
      throw new RtcError('disconnected', 'left the room while the echo test was requested');
    }
    this.workers.add(job.worker);
    const test = new EchoTest({
      client: this.client,
      room,
      job,
      stream: options.stream === undefined ? this.localStream : options.stream,
      configuration: this.peerConfiguration(),
      send: (to, message) => this.sendSignal(to, message),
      timeoutMs: options.timeoutMs ?? ((options.duration ?? 60) + 30) * 1000,
      logger: this.logger,
      onEnd: (ended) => {
        if (this.echo === ended) this.echo = null;
      },
    });
    this.echo = test;
    return test;
  }

  /** The echo test under way, if any. */
  get activeEchoTest(): EchoTest | null {
    return this.echo;
  }

  /**
   * The room's running recording (protocol.md, "Recording"), or null. While it
   * runs the room sends our media to its worker by itself.
   */
  get recording(): Readonly<ActiveRecording> | null {
    return this._recording;
  }

  /** The connection sending our media to the recording worker (null while not recorded). */
  get recordingConnection(): RTCPeerConnection | null {
    return this.upstream?.pc ?? null;
  }

  /**
   * Start recording the room (grant `record`). Resolves with the recording
   * once a worker took it (`recording:state` reaches everyone, us included);
   * rejects with `forbidden` (no grant), `conflict` (already recorded),
   * `unavailable` (no worker can record), `not_found` (not joined).
   */
  async startRecording(): Promise<Readonly<ActiveRecording>> {
    const room = this._name;
    if (this._state !== 'joined' || room === null) throw new RtcError('not_found', 'join the room first');
    const ack = await this.client.request('recording:start', { room }, { timeoutMs: RECORDING_START_TIMEOUT_MS });
    const state: ActiveRecording = {
      recording: ack.recording,
      active: true,
      by: ack.by,
      startedAt: ack.startedAt,
      worker: ack.worker,
    };
    // The event comes before the ack; should it not have, the ack says the same.
    if (this._name === room && this._state === 'joined' && this._recording === null) this.applyRecording(state);
    return state;
  }

  /**
   * Stop the room's recording (grant `record`; anyone with it, not only its
   * starter). Resolves once stopped; `room.recording` turns null with the
   * `recording:state` that follows. Rejects with `not_found` when nothing is
   * recorded (or not joined), `forbidden` without the grant.
   */
  async stopRecording(): Promise<void> {
    const room = this._name;
    if (this._state !== 'joined' || room === null) throw new RtcError('not_found', 'join the room first');
    await this.client.request('recording:stop', { room });
  }

  /** Every peer connection, by participant id (a snapshot; empty while the room forwards). */
  peerConnections(): Map<ParticipantId, RTCPeerConnection> {
    return new Map([...this.peersById].map(([id, peer]) => [id, peer.pc]));
  }

  /**
   * Join `room`. The client must be connected. Resolves with our own
   * participant, the others (a peer connection toward each is already being
   * offered), the ICE servers and the join seq; rejects with an `RtcError`
   * (`forbidden`, `room_full`, `conflict`, ...).
   */
  async join(room: RoomName, options: JoinOptions = {}): Promise<JoinInfo> {
    if (this._state === 'closed') throw new RtcError('conflict', 'room is closed');
    if (this._state === 'joining' || this._state === 'joined' || this._state === 'rejoining') {
      throw new RtcError('conflict', `already ${this._state} room ${this._name ?? ''}`);
    }
    const request: JoinRequest = { room };
    if (options.name !== undefined) request.name = options.name;
    if (options.meta !== undefined) request.meta = options.meta;
    this.joinRequest = request;
    return this.runJoin(request);
  }

  /**
   * Leave the room: close every peer connection and tell the server. The
   * room may join again afterwards. Never rejects for a connection that is
   * already gone.
   */
  async leave(): Promise<void> {
    if (this.joining) await this.joining.catch(() => undefined);
    const wasJoined = this._state === 'joined';
    const name = this._name;
    this.joinRequest = null;
    this.teardown('local');
    if (this._state !== 'closed' && this._state !== 'idle') this.setState('left');
    if (!wasJoined || name === null) return;
    const sent = this.client.request('room:leave', { room: name }).then(
      () => undefined,
      (err: unknown) => {
        if (!(err instanceof RtcError && (err.code === 'disconnected' || err.code === 'not_found'))) {
          this.logger.warn('room:leave failed', err);
        }
      },
    );
    // While the client reconnects the leave is queued (sent after the resume); do not wait for it.
    if (this.client.connected) await sent;
  }

  /** Leave, stop listening to the client and drop every listener. Idempotent. */
  async close(): Promise<void> {
    if (this._state === 'closed') return;
    await this.leave();
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    this._files?.dispose();
    this.setState('closed');
    this.removeAllListeners();
  }

  /**
   * Send `stream`'s audio and video (or nothing, with `null`) to every peer,
   * now and to peers that come later, and publish the matching `audio` and
   * `video` state. Tracks are swapped without renegotiation where possible.
   */
  async setLocalStream(stream: MediaStream | null): Promise<void> {
    this.localStream = stream;
    await Promise.all([
      ...[...this.peersById.values()].map((peer) => peer.setLocalTracks(stream)),
      this.upstream?.setLocalStream(stream),
      this.forwarded?.setLocalStream(stream),
    ]);
    await this.publishMediaState();
  }

  get stream(): MediaStream | null {
    return this.localStream;
  }

  /** Mute or unmute the local audio (the track keeps running) and publish `audio`. */
  async setAudioEnabled(enabled: boolean): Promise<void> {
    for (const track of this.localStream?.getAudioTracks() ?? []) track.enabled = enabled;
    await this.publishMediaState();
  }

  /** Turn the local video on or off (black frames while off) and publish `video`. */
  async setVideoEnabled(enabled: boolean): Promise<void> {
    for (const track of this.localStream?.getVideoTracks() ?? []) track.enabled = enabled;
    await this.publishMediaState();
  }

  /**
   * Change our published state (`screen`, `hand`, `speaking`, or `audio`/`video`
   * directly). Only keys that differ are sent. Before joining, the state is
   * kept and published on join.
   */
  async updateState(state: Partial<ParticipantState>): Promise<void> {
    const changed: Partial<ParticipantState> = {};
    for (const key of Object.keys(state) as (keyof ParticipantState)[]) {
      const value = state[key];
      if (value !== undefined && this.localState[key] !== value) changed[key] = value;
    }
    if (Object.keys(changed).length === 0) return;
    this.localState = { ...this.localState, ...changed };
    this.emit('local:state', { state: this.localState });
    if (this._state !== 'joined' || this._name === null) return;
    const ack = await this.client.request('participant:update', { room: this._name, state: changed });
    this._seq = Math.max(this._seq, ack.seq);
  }

  // ---- joining ----

  private async runJoin(request: JoinRequest): Promise<JoinInfo> {
    this._name = request.room;
    this.buffered = [];
    this.departed.clear();
    this.workers.clear();
    this.setState('joining');
    const pending = this.client.request('room:join', request);
    this.joining = pending;
    let ack;
    try {
      ack = await pending;
    } catch (err) {
      this.buffered = [];
      if (this._state === 'joining') this.setState('idle', asRtcError(err));
      throw err;
    } finally {
      this.joining = null;
    }
    if (this._state !== 'joining') {
      // The connection dropped (or the room was closed) while the join was in flight.
      throw new RtcError('disconnected', 'join interrupted');
    }
    this._self = ack.self;
    this._seq = ack.seq;
    this.iceServers = ack.iceServers;
    // The server starts us all-false; what the app set before joining is published below.
    const wanted = this.localState;
    this.localState = { ...EMPTY_STATE };
    const participants: RemoteParticipant[] = [];
    this._selfConnection = 'connected';
    // A forwarded room: no offers to the others, our media goes through its worker.
    const worker = ack.mode === 'forward' && typeof ack.worker === 'string' ? ack.worker : null;
    for (const entry of ack.participants) {
      const participant = this.addParticipant(entry.id, entry.user, entry.name, entry.state, entry.polite);
      participant.connection = presence(entry.connection);
      participants.push(participant);
      this.emit('participant:joined', { participant });
      if (worker === null) this.createPeer(participant, 'offerer');
    }
    this.setState('joined');
    if (worker !== null) this.enterForward(worker, false);
    if (ack.recording) this.applyRecording(ack.recording);
    const buffered = this.buffered;
    this.buffered = [];
    for (const item of buffered) this.dispatch(item);
    // Awaited so that when join resolves the others have seen our media state;
    // a failure here does not undo the join.
    await this.updateState({ ...wanted, ...this.mediaState() }).catch((err: unknown) =>
      this.logger.warn('publishing the initial state failed', err),
    );
    return {
      room: ack.room,
      seq: ack.seq,
      self: ack.self,
      participants,
      iceServers: ack.iceServers,
      recording: this._recording,
      mode: this._mode,
    };
  }

  private async publishMediaState(): Promise<void> {
    await this.updateState(this.mediaState());
  }

  /** `audio`/`video` are true while an enabled, live track of that kind is sent. */
  private mediaState(): Pick<ParticipantState, 'audio' | 'video'> {
    const live = (tracks: MediaStreamTrack[]): boolean =>
      tracks.some((t) => t.enabled && t.readyState === 'live');
    return {
      audio: live(this.localStream?.getAudioTracks() ?? []),
      video: live(this.localStream?.getVideoTracks() ?? []),
    };
  }

  // ---- server events ----

  private onServerEvent<K extends keyof RoomServerEvents>(event: K, payload: RoomServerEvents[K]): void {
    if (payload.room !== this._name) return;
    const item = { event, payload } as Buffered;
    if (this._state === 'joining') this.buffered.push(item);
    else if (this._state === 'joined') this.dispatch(item);
  }

  private dispatch(item: Buffered): void {
    switch (item.event) {
      case 'signal':
        this.onSignal(item.payload);
        return;
      case 'participant:joined':
        if (this.acceptSeq(item.event, item.payload.seq)) this.onJoined(item.payload);
        return;
      case 'participant:left':
        if (this.acceptSeq(item.event, item.payload.seq)) this.onLeft(item.payload);
        return;
      case 'participant:updated':
        if (this.acceptSeq(item.event, item.payload.seq)) this.onUpdated(item.payload);
        return;
      case 'recording:state':
        if (this.acceptSeq(item.event, item.payload.seq)) this.onRecordingState(item.payload);
        return;
      case 'room:mode':
        if (this.acceptSeq(item.event, item.payload.seq)) this.onMode(item.payload);
        return;
    }
  }

  /** Drop events at or below the seq we already have (e.g. buffered before the join ack). */
  private acceptSeq(event: RoomEventName, seq: number): boolean {
    if (typeof seq !== 'number') return true;
    if (seq <= this._seq) {
      this.logger.debug(`dropping stale ${event} seq ${seq} <= ${this._seq}`);
      return false;
    }
    if (seq !== this._seq + 1) this.logger.debug(`${event}: seq ${seq} after ${this._seq}`);
    this._seq = seq;
    return true;
  }

  private onJoined({ participant: p, polite }: ParticipantJoinedEvent): void {
    if (p.id === this._self?.id) return;
    // The joiner offers to us: no peer until its first signal arrives.
    const participant = this.addParticipant(p.id, p.user, p.name, p.state, polite);
    participant.connection = presence(p.connection);
    const forwarded = this.forwarded;
    if (forwarded) {
      // Their media comes over our `down` connection (a track may have come before this event).
      participant.connectionState = forwarded.connectionState;
      participant.stream = forwarded.streamOf(p.id);
    }
    this.emit('participant:joined', { participant });
    const stream = participant.stream;
    if (stream) for (const track of stream.getTracks()) this.emit('track', { participantId: p.id, track, stream });
  }

  private onLeft({ id, reason }: ParticipantLeftEvent): void {
    if (id === this._self?.id) {
      // The server removed us (e.g. `timeout`): we are no longer in the room. An
      // operator's removal (`kicked`, `closed`) is final: no rejoining by ourselves.
      this.logger.warn(`removed from ${this._name ?? ''} (${reason})`);
      const byOperator = reason === 'kicked' || reason === 'closed';
      if (byOperator) this.joinRequest = null;
      this.startOver(new RtcError(byOperator ? 'forbidden' : 'not_found', `removed from the room (${reason})`));
      return;
    }
    this.departed.add(id);
    this.forwarded?.participantLeft(id);
    this.removeParticipant(id, reason);
  }

  private onUpdated({ participant: p }: ParticipantUpdatedEvent): void {
    const self = this._self;
    if (self && p.id === self.id) {
      // Server-caused events reach their subject too: our own presence, as the others see it.
      this._selfConnection = presence(p.connection);
      this.emit('self:updated', {
        self,
        state: { ...EMPTY_STATE, ...p.state },
        connection: this._selfConnection,
      });
      return;
    }
    const participant = this.participantsById.get(p.id);
    if (!participant) return;
    const previous = participant.state;
    const previousConnection = participant.connection;
    participant.state = { ...EMPTY_STATE, ...p.state };
    participant.name = p.name;
    if (p.connection !== undefined) participant.connection = presence(p.connection);
    this.emit('participant:updated', { participant, previous, previousConnection });
  }

  private onSignal(event: SignalEvent): void {
    const from = event.from;
    if (from === this._self?.id || this.departed.has(from)) return;
    const message = toPeerMessage(event);
    if (this.workers.has(from)) {
      // A media worker's hidden participant: only our connection to it talks to it.
      this.workerConnection(from, event.pc)?.handleSignal(message);
      return;
    }
    if (this.forwarded) {
      // A mesh signal sent before its sender heard that the room forwards: no peer for it.
      this.logger.debug(`room forwards: dropping a signal from ${from}`);
      return;
    }
    if ('restart' in message) {
      // Nothing to restart before a peer exists: its first offer carries fresh ICE anyway.
      void this.peersById.get(from)?.handleSignal(message);
      return;
    }
    let peer = this.peersById.get(from);
    if (!peer) {
      // The first signal from a newcomer: it joined after us, so we are impolite
      // unless its participant:joined said otherwise.
      let participant = this.participantsById.get(from);
      if (!participant) {
        participant = this.addParticipant(from, '', from, EMPTY_STATE, false);
        this.emit('participant:joined', { participant });
      }
      peer = this.createPeer(participant, 'answerer');
    }
    void peer.handleSignal(message);
  }

  /** Our connection to a media worker that a signal is for: the recording upstream's
   * (tagged `record`), the forwarded room's (`up`, `down`), else the echo test's. */
  private workerConnection(worker: ParticipantId, pc: SignalPc | undefined
  ): { handleSignal(message: PeerMessage): void } | null {
    if (pc === 'record') return this.upstream?.worker === worker ? this.upstream : null;
    if (pc === 'up' || pc === 'down') {
      const forwarded = this.forwarded;
      if (forwarded?.worker !== worker) return null;
      return { handleSignal: (message) => forwarded.handleSignal(pc, message) };
    }
    if (pc === undefined && this.echo?.worker === worker) return this.echo;
    return null;
  }

  // ---- forwarding ----

  private onMode(event: RoomModeEvent): void {
    if (event.mode === 'forward') {
      if (typeof event.worker === 'string') this.enterForward(event.worker, event.moved === true);
    } else if (event.mode === 'mesh') {
      this.enterMesh();
    }
  }

  /**
   * Close every peer and send and receive through `worker` instead. The
   * participants stay; their streams are replaced as the worker's tracks come.
   * Forwarding through that worker already, nothing changes.
   */
  private enterForward(worker: ParticipantId, moved: boolean): void {
    if (this.forwarded && this.forwarded.worker === worker) return;
    const previous = this._mode;
    this.closeForwarded();
    for (const peer of [...this.peersById.values()]) peer.close();
    this.peersById.clear();
    this.workers.add(worker);
    this._mode = 'forward';
    this.logger.info(`room ${this._name ?? ''} forwards through worker ${worker}${moved ? ' (moved)' : ''}`);
    const forwarded = new ForwardedMedia({
      worker,
      stream: this.localStream,
      configuration: this.peerConfiguration(),
      send: (pc, message) => this.sendSignal(worker, message, pc),
      logger: this.logger,
    });
    this.forwarded = forwarded;
    forwarded.on('track', ({ participantId, track, stream }) => {
      // Not announced yet: onJoined attaches the stream. Gone: nothing to show it on.
      const participant = this.participantsById.get(participantId);
      if (!participant) return;
      participant.stream = stream;
      this.emit('track', { participantId, track, stream });
    });
    forwarded.on('trackended', (e) => {
      if (this.participantsById.has(e.participantId)) this.emit('trackended', e);
    });
    forwarded.on('connectionstatechange', ({ pc, state }) => {
      this.emit('forward:connection', { worker, pc, state });
      if (pc === 'down' && this.forwarded === forwarded) this.setEveryoneConnectionState(state);
    });
    for (const participant of this.participantsById.values()) participant.stream = null;
    this.setEveryoneConnectionState(forwarded.connectionState);
    this.emit('mode', { mode: 'forward', previous, worker, moved });
  }

  /**
   * The worker is gone and none took over: mesh again. Of each pair the
   * participant whose id sorts first offers and is the impolite side; the other
   * waits for its offer.
   */
  private enterMesh(): void {
    if (this._mode === 'mesh' && !this.forwarded) return;
    const previous = this._mode;
    this.closeForwarded();
    this._mode = 'mesh';
    const self = this._self?.id ?? '';
    this.logger.info(`room ${this._name ?? ''} meshes again`);
    for (const participant of this.participantsById.values()) participant.stream = null;
    this.setEveryoneConnectionState('new');
    for (const participant of [...this.participantsById.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
      participant.polite = self > participant.id;
      if (!participant.polite && !this.peersById.has(participant.id)) this.createPeer(participant, 'offerer');
    }
    this.emit('mode', { mode: 'mesh', previous, worker: null, moved: false });
  }

  private closeForwarded(): void {
    const forwarded = this.forwarded;
    this.forwarded = null;
    forwarded?.close();
  }

  /** While forwarding, everyone's media state is the `down` connection's. */
  private setEveryoneConnectionState(state: PeerConnectionState): void {
    for (const participant of this.participantsById.values()) {
      if (participant.connectionState === state) continue;
      participant.connectionState = state;
      this.emit('peer:state', { participantId: participant.id, state });
    }
  }

  // ---- recording ----

  private onRecordingState(event: RecordingStateEvent): void {
    const { room: _room, seq: _seq, ...state } = event;
    this.applyRecording(state);
  }

  /**
   * Follow the room's recording: while it is active our media goes to its
   * worker over one upstream connection; a new worker (`moved`) gets a new
   * connection; the end closes it. The same state twice changes nothing.
   */
  private applyRecording(state: RecordingInfo): void {
    const previous = this._recording;
    if (state.active) {
      this.workers.add(state.worker);
      const same =
        previous !== null && previous.recording === state.recording && previous.worker === state.worker;
      if (same && state.moved === previous.moved && state.upstream === previous.upstream) return;
      this._recording = { ...state };
      const upstream = this.upstream;
      if (state.upstream === false) {
        // The forwarding worker records what it receives from us already.
        this.closeUpstream();
      } else if (!upstream || upstream.closed || upstream.recording !== state.recording || upstream.worker !== state.worker) {
        this.openUpstream(state);
      }
    } else {
      // The end of another recording than ours (a stale replay) changes nothing.
      if (previous !== null && previous.recording !== state.recording) return;
      this.closeUpstream();
      this._recording = null;
    }
    this.emit('recording:state', { recording: this._recording, previous, state });
  }

  private openUpstream(state: ActiveRecording): void {
    this.closeUpstream();
    const worker = state.worker;
    this.logger.info(`recording ${state.recording}: sending our media to worker ${worker}`);
    const upstream = new RecordingUpstream({
      recording: state.recording,
      worker,
      stream: this.localStream,
      configuration: this.peerConfiguration(),
      send: (message) => this.sendSignal(worker, message, 'record'),
      logger: this.logger,
    });
    upstream.on('connectionstatechange', ({ state: connection }) => {
      this.emit('recording:connection', { worker, state: connection });
    });
    this.upstream = upstream;
  }

  private closeUpstream(): void {
    const upstream = this.upstream;
    this.upstream = null;
    upstream?.close();
  }

  // ---- connection ----

  /**
   * A lost transport keeps everything (the session is resumed: same
   * participant id, events replayed, peers untouched). A lost session starts
   * over as a new participant; a connection down for good leaves.
   */
  private onConnectionState(change: ConnectionStateChange): void {
    this.emit('connection:state', change);
    const { state, error, resumed } = change;
    if (state === 'connected') {
      if (this._state === 'rejoining') {
        this.rejoin();
      } else if (this._state === 'joined' && this._name !== null) {
        const kept = resumed === true && this.client.participantId(this._name) === this._self?.id;
        if (!kept) this.startOver(new RtcError('not_found', 'the session was not resumed'));
      }
      return;
    }
    if (state === 'disconnected' || state === 'closed') {
      if (this._state !== 'joined' && this._state !== 'joining' && this._state !== 'rejoining') return;
      // The connection will not come back (e.g. the token was refused on reconnect).
      this.teardown('disconnect');
      this.joinRequest = null;
      this.setState('left', error ?? new RtcError('disconnected', `connection ${state}`));
    }
    // `reconnecting`: keep the membership and the peers; the client resumes the session.
  }

  /** The client's session is gone, and our participant with it. */
  private onSessionLost(error: RtcError): void {
    // A join in flight is rejected by the client and reports that itself.
    if (this._state === 'joined') this.startOver(error);
  }

  /** Our participant is gone: drop everything and, unless told not to, join again as a new one. */
  private startOver(error: RtcError): void {
    this.teardown('disconnect');
    if (this.options.rejoin === false || this.joinRequest === null) {
      this.joinRequest = null;
      this.setState('left', error);
      return;
    }
    this.setState('rejoining', error);
    if (this.client.connected) this.rejoin();
  }

  private rejoin(): void {
    const request = this.joinRequest;
    if (!request) return;
    this.runJoin(request).catch((err: unknown) => {
      if (this._state === 'closed' || this._state === 'left' || this.joinRequest !== request) return;
      const error = asRtcError(err);
      const client = this.client.state;
      if (error.code === 'disconnected' && client !== 'disconnected' && client !== 'closed') {
        // The session went away again meanwhile: try on the next one.
        this.setState('rejoining', error);
        if (this.client.connected) this.rejoin();
        return;
      }
      this.logger.warn('rejoin failed', err);
      this.joinRequest = null;
      this.setState('left', error);
    });
  }

  // ---- bookkeeping ----

  private addParticipant(
    id: ParticipantId,
    user: UserId,
    name: string,
    state: ParticipantState,
    polite: boolean,
  ): MutableParticipant {
    const existing = this.participantsById.get(id);
    if (existing) {
      // A signal got here before its participant:joined.
      existing.user = user;
      existing.name = name;
      existing.state = { ...EMPTY_STATE, ...state };
      return existing;
    }
    const participant: MutableParticipant = {
      id,
      user,
      name,
      state: { ...EMPTY_STATE, ...state },
      connection: 'connected',
      polite,
      stream: null,
      connectionState: 'new',
    };
    this.participantsById.set(id, participant);
    return participant;
  }

  private removeParticipant(id: ParticipantId, reason: RemovalReason): void {
    this.peersById.get(id)?.close();
    this.peersById.delete(id);
    const participant = this.participantsById.get(id);
    if (!participant) return;
    this.participantsById.delete(id);
    participant.connectionState = 'closed';
    this.emit('participant:left', { participant, reason });
  }

  private teardown(reason: RemovalReason): void {
    this.echo?.abort();
    this.echo = null;
    this.closeUpstream();
    this.closeForwarded();
    if (this._mode !== 'mesh') {
      this._mode = 'mesh';
      this.emit('mode', { mode: 'mesh', previous: 'forward', worker: null, moved: false });
    }
    const recording = this._recording;
    this._recording = null;
    if (recording) this.emit('recording:state', { recording: null, previous: recording, state: null });
    for (const id of [...this.participantsById.keys()]) this.removeParticipant(id, reason);
    for (const peer of this.peersById.values()) peer.close();
    this.peersById.clear();
    this.buffered = [];
    this._self = null;
    this._selfConnection = 'connected';
  }

  private peerConfiguration(): RTCConfiguration {
    return {
      iceServers: this.iceServers.map((s) => ({ ...s })),
      iceTransportPolicy: this.options.iceTransportPolicy ?? 'all',
    };
  }

  private createPeer(participant: MutableParticipant, role: PeerRole): Peer {
    const id = participant.id;
    const peer = new Peer({
      id,
      polite: participant.polite,
      role,
      configuration: this.peerConfiguration(),
      send: (message) => this.sendSignal(id, message),
      logger: this.logger,
    });
    this.peersById.set(id, peer);
    peer.on('track', ({ track, stream }) => {
      participant.stream = stream;
      this.emit('track', { participantId: id, track, stream });
    });
    peer.on('trackended', ({ track, stream }) => {
      this.emit('trackended', { participantId: id, track, stream });
    });
    peer.on('connectionstatechange', ({ state }) => {
      participant.connectionState = state;
      this.emit('peer:state', { participantId: id, state });
    });
    peer.on('icerestart', ({ origin, reason }) => {
      this.emit('peer:icerestart', { participantId: id, origin, reason });
    });
    peer.on('datachannel', ({ channel }) => {
      this.emit('datachannel', { participantId: id, channel });
    });
    // Tracks go in before any description, so the answerer's tracks ride on its first answer.
    void peer.setLocalTracks(this.localStream);
    if (role === 'offerer') peer.ensureReceiving();
    return peer;
  }

  private sendSignal(to: ParticipantId, message: PeerMessage, pc?: SignalPc): void {
    const room = this._name;
    if (room === null || this._state !== 'joined') return;
    const payload = pc === undefined ? { room, to, ...message } : { room, to, pc, ...message };
    this.client.request('signal', payload).catch((err: unknown) => {
      // not_found: they left meanwhile; disconnected: we will rejoin. Neither is news.
      if (err instanceof RtcError && (err.code === 'not_found' || err.code === 'disconnected')) {
        this.logger.debug(`signal to ${to} dropped: ${err.code}`);
      } else {
        this.logger.warn(`signal to ${to} failed`, err);
      }
    });
  }

  private setState(state: RoomState, error?: RtcError): void {
    const previous = this._state;
    if (previous === state && !error) return;
    this._state = state;
    this.emit('state', error ? { state, previous, error } : { state, previous });
  }
}

function toPeerMessage(event: SignalEvent): PeerMessage {
  if ('restart' in event) return { restart: true };
  if ('description' in event) return { description: event.description };
  return { candidate: event.candidate };
}

function presence(value: unknown): PresenceState {
  return value === 'reconnecting' ? 'reconnecting' : 'connected';
}

function asRtcError(err: unknown): RtcError {
  if (err instanceof RtcError) return err;
  return new RtcError('internal', err instanceof Error ? err.message : String(err));
}
