import type { SignalingClient } from './client';
import { RtcError } from './errors';
import { Emitter, type Unsubscribe } from './events';
import type { Logger } from './log';
import { Peer, type PeerConnectionState, type PeerMessage } from './peer';
import type { EchoReport, MediaEndReason, MediaEndedEvent, MediaJob, ParticipantId, RoomName } from './types';

export interface EchoTestOptions {
  /** Seconds of media before the report (1–60); default: the node's (8). */
  duration?: number;
  /**
   * What to send; default: the room's local stream. With `null` nothing is sent
   * (the report then says that no media arrived).
   */
  stream?: MediaStream | null;
  /** How long to wait for the report once the job started; default `duration` (or 60 s) + 30 s. */
  timeoutMs?: number;
}

/**
 * - `connecting`: the job is ours; our offer goes to the worker
 * - `running`: the connection is up; the worker measures for `duration` seconds
 * - `reported`: the report is here; the worker keeps echoing until `stop()` (at most 60 s more)
 * - `ended`: over, connection closed (`endReason` says why); final
 */
export type EchoTestState = 'connecting' | 'running' | 'reported' | 'ended';

/**
 * Why a test ended: the job's `media:ended` reason (`finished`: the worker
 * ended it, `worker_lost`), or ours: `stopped` (`stop()`), `timeout` (no
 * report in time), `left` (our membership of the room ended).
 */
export type EchoEndReason = MediaEndReason | 'stopped' | 'timeout' | 'left';

export interface EchoTestEvents {
  state: { state: EchoTestState; previous: EchoTestState };
  /** An echoed track arrived; `stream` is the test's one stream of echoed media. */
  track: { track: MediaStreamTrack; stream: MediaStream };
  /** The connection to the worker changed state (`closed` once the test ended). */
  connectionstatechange: { state: PeerConnectionState };
  report: { report: EchoReport };
  /** The test is over; `error` says why when it ended without a report (else null). */
  ended: { reason: EchoEndReason; error: RtcError | null };
}

/** What a `Room` hands a test it starts; not for apps (use `room.echoTest()`). */
export interface EchoTestInit {
  client: SignalingClient;
  room: RoomName;
  job: MediaJob;
  stream: MediaStream | null;
  configuration: RTCConfiguration;
  send: (to: ParticipantId, message: PeerMessage) => void;
  timeoutMs: number;
  logger: Logger;
  /** Called once when the test ends, whatever the reason. */
  onEnd: (test: EchoTest) => void;
}

/**
 * One echo test (protocol.md, "Media jobs"): a peer connection to a media
 * worker, which sends our own encoded audio and video back on the same
 * transceivers and, after `duration` seconds, reports what it saw. We offer
 * (with the SDK's `Peer`, as to any participant: the worker is the polite
 * side); `stop()` releases the job and closes the connection.
 */
export class EchoTest extends Emitter<EchoTestEvents> {
  readonly room: RoomName;
  readonly job: string;
  /** The worker's hidden participant id in the room. */
  readonly worker: ParticipantId;
  /** The echoed media: our own tracks as they came back (stable for the test's lifetime). */
  readonly stream: MediaStream;

  private readonly client: SignalingClient;
  private readonly peer: Peer;
  private readonly logger: Logger;
  private readonly onEnd: (test: EchoTest) => void;
  private readonly unsubscribes: Unsubscribe[];
  private readonly done: Promise<EchoReport>;
  private resolveDone!: (report: EchoReport) => void;
  private rejectDone!: (error: RtcError) => void;
  private timer: ReturnType<typeof setTimeout> | null;
  private _state: EchoTestState = 'connecting';
  private _report: EchoReport | null = null;
  private _endReason: EchoEndReason | null = null;
  private _error: RtcError | null = null;

  constructor(init: EchoTestInit) {
    super();
    this.client = init.client;
    this.room = init.room;
    this.job = init.job.job;
    this.worker = init.job.worker;
    this.logger = init.logger;
    this.onEnd = init.onEnd;
    this.done = new Promise<EchoReport>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // Handled here so that an app that never calls wait() sees no unhandled rejection.
    this.done.catch(() => undefined);

    const worker = this.worker;
    this.peer = new Peer({
      id: worker,
      polite: false,
      role: 'offerer',
      configuration: init.configuration,
      send: (message) => init.send(worker, message),
      logger: init.logger,
    });
    this.stream = this.peer.remoteStream;
    this.peer.on('track', (e) => this.emit('track', e));
    this.peer.on('connectionstatechange', ({ state }) => {
      if (state === 'connected' && this._state === 'connecting') this.setState('running');
      this.emit('connectionstatechange', { state });
    });
    // Tracks (and receive-only sections for missing kinds) go in before the first offer.
    void this.peer.setLocalTracks(init.stream);
    this.peer.ensureReceiving();

    this.unsubscribes = [
      init.client.on('media:report', (e) => {
        if (e.job === this.job) this.onReport(e.report);
      }),
      init.client.on('media:ended', (e) => {
        if (e.job === this.job) this.onJobEnded(e);
      }),
    ];
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this._report) return;
      const error = new RtcError('timeout', `no echo report within ${init.timeoutMs} ms`);
      this.finish('timeout', error, true);
    }, init.timeoutMs);
  }

  get state(): EchoTestState {
    return this._state;
  }

  /** The worker's report, once it came. */
  get report(): EchoReport | null {
    return this._report;
  }

  /** Why the test ended (null while it runs). */
  get endReason(): EchoEndReason | null {
    return this._endReason;
  }

  /** Why it ended without a report, if it did. */
  get error(): RtcError | null {
    return this._error;
  }

  /** The connection to the worker, for `getStats()`. */
  get pc(): RTCPeerConnection {
    return this.peer.pc;
  }

  get connectionState(): PeerConnectionState {
    return this.peer.connectionState;
  }

  /**
   * The report. Rejects with the reason the test ended without one:
   * `unavailable` (the worker went away), `timeout`, `disconnected` (we left
   * the room), `conflict` (`stop()` first).
   */
  wait(): Promise<EchoReport> {
    return this.done;
  }

  /**
   * Release the job (the worker stops echoing) and close the connection.
   * Idempotent; never rejects.
   */
  async stop(): Promise<void> {
    if (this._state === 'ended') return;
    const release = this.finish('stopped', null, true);
    // While the client reconnects the release is queued; do not wait for it.
    if (this.client.connected) await release;
  }

  /** A signal from the worker (the room routes them here). */
  handleSignal(message: PeerMessage): void {
    if (this._state !== 'ended') void this.peer.handleSignal(message);
  }

  /** The room's membership ended: the node ends the job itself (`requester_left`). */
  abort(): void {
    this.finish('left', new RtcError('disconnected', 'left the room during the echo test'), false);
  }

  private onReport(report: EchoReport): void {
    if (this._state === 'ended' || this._report) return;
    this._report = report;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.setState('reported');
    this.emit('report', { report });
    this.resolveDone(report);
  }

  private onJobEnded(event: MediaEndedEvent): void {
    let error: RtcError | null = null;
    if (!this._report) {
      error = event.error
        ? RtcError.fromWire(event.error, `echo job ${event.reason}`)
        : new RtcError('unavailable', `the echo job ended (${event.reason}) without a report`);
    }
    this.finish(event.reason, error, false);
  }

  /** End the test once; resolves when the release (if any) was answered. */
  private finish(reason: EchoEndReason, error: RtcError | null, release: boolean): Promise<void> {
    if (this._state === 'ended') return Promise.resolve();
    this.logger.info(`echo test ${this.job} ended: ${reason}${error ? ` (${error.code}: ${error.message})` : ''}`);
    this._endReason = reason;
    this._error = error;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    const released = release ? this.release() : Promise.resolve();
    this.peer.close();
    if (!this._report) {
      this.rejectDone(error ?? new RtcError('conflict', 'the echo test was stopped before its report'));
    }
    this.setState('ended');
    this.emit('ended', { reason, error });
    this.onEnd(this);
    this.removeAllListeners();
    return released;
  }

  private async release(): Promise<void> {
    try {
      await this.client.releaseMedia(this.job);
    } catch (err) {
      // not_found: the job had ended already; disconnected: so has our membership.
      if (err instanceof RtcError && (err.code === 'not_found' || err.code === 'disconnected')) return;
      this.logger.warn(`releasing echo job ${this.job} failed`, err);
    }
  }

  private setState(state: EchoTestState): void {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    this.emit('state', { state, previous });
  }
}
