import { Emitter } from './events';
import type { Logger } from './log';
import type { ParticipantId, WireCandidate, WireDescription } from './types';

/** What a peer sends to its remote side; the room adds `room` and `to`. */
export type PeerMessage =
  | { description: WireDescription }
  | { candidate: WireCandidate | null }
  | { restart: true };

/**
 * `offerer`: we joined after them, so we make the first offer (protocol.md,
 * "Who offers first"). `answerer`: they joined after us; we wait for their
 * first offer and never offer before it.
 */
export type PeerRole = 'offerer' | 'answerer';

export interface PeerOptions {
  /** The remote participant's id. */
  id: ParticipantId;
  /** Our own perfect-negotiation role toward this peer, as the server says. */
  polite: boolean;
  role: PeerRole;
  configuration: RTCConfiguration;
  send: (message: PeerMessage) => void;
  logger: Logger;
  /**
   * Never offer: only answer the remote side's offers (a forwarding worker's
   * `down` connection, which ignores offers). An ICE restart then asks the
   * remote side (`signal {restart: true}`). Default false.
   */
  answerOnly?: boolean;
}

export type PeerConnectionState = RTCPeerConnectionState;

export interface PeerEvents {
  /**
   * A remote track arrived; `stream` is this peer's one stream holding all of
   * them, `streams` the remote side's streams of it (its `a=msid` streams).
   */
  track: { track: MediaStreamTrack; stream: MediaStream; streams: readonly MediaStream[] };
  /** A remote track ended and was removed from `stream`. */
  trackended: { track: MediaStreamTrack; stream: MediaStream };
  /** `pc.connectionState` changed; `closed` is also sent when `close()` is called. */
  connectionstatechange: { state: PeerConnectionState };
  /** An ICE restart was started here (`local`) or asked for by the remote side (`remote`). */
  icerestart: { origin: 'local' | 'remote'; reason: string };
  /** The remote side opened a data channel. */
  datachannel: { channel: RTCDataChannel };
}

/** Automatic ICE restarts (on `disconnected` / `failed`) are at least this far apart. */
const AUTO_RESTART_INTERVAL_MS = 3000;

const KINDS = ['audio', 'video'] as const;
/** The data channel an offerer opens up front; carries nothing (yet). */
const CONTROL_CHANNEL = 'ctl';
type Kind = (typeof KINDS)[number];

/**
 * One RTCPeerConnection toward one remote participant, negotiated with the
 * "perfect negotiation" pattern: either side may start a negotiation; on glare
 * the impolite side ignores the incoming offer and the polite side lets the
 * browser roll its own offer back. Incoming signals are applied one at a time.
 */
export class Peer extends Emitter<PeerEvents> {
  readonly id: ParticipantId;
  readonly polite: boolean;
  readonly role: PeerRole;
  readonly answerOnly: boolean;
  readonly pc: RTCPeerConnection;
  /** Every live remote track of this peer, in one stream (stable for the peer's lifetime). */
  readonly remoteStream = new MediaStream();

  private readonly send: (message: PeerMessage) => void;
  private readonly logger: Logger;
  private readonly senders = new Map<Kind, RTCRtpSender>();
  private makingOffer = false;
  private ignoreOffer = false;
  private settingRemoteAnswerPending = false;
  private awaitingFirstOffer: boolean;
  /** Candidates that came before any remote description: nothing to apply them to yet. */
  private pendingCandidates: (WireCandidate | null)[] = [];
  private incoming: Promise<void> = Promise.resolve();
  private _closed = false;
  private lastRestartAt = -Infinity;
  private restartTimer: ReturnType<typeof setTimeout> | null = null;
  private _iceRestarts = 0;

  constructor(options: PeerOptions) {
    super();
    this.id = options.id;
    this.polite = options.polite;
    this.role = options.role;
    this.answerOnly = options.answerOnly === true;
    this.send = options.send;
    this.logger = options.logger;
    this.awaitingFirstOffer = options.role === 'answerer';
    this.pc = new RTCPeerConnection(options.configuration);
    if (options.role === 'offerer') {
      // Carry an SCTP m-line from the first offer on: a peer that cannot renegotiate
      // (aiortc) could otherwise never open a data channel (a file) toward us.
      this.pc.createDataChannel(CONTROL_CHANNEL);
    }
    this.pc.onnegotiationneeded = () => void this.negotiate();
    this.pc.onicecandidate = ({ candidate }) => this.sendCandidate(candidate);
    this.pc.ontrack = ({ track, streams }) => this.addRemoteTrack(track, streams);
    this.pc.ondatachannel = ({ channel }) => {
      if (!this._closed) this.emit('datachannel', { channel });
    };
    this.pc.onconnectionstatechange = () => {
      if (this._closed) return;
      this.emit('connectionstatechange', { state: this.pc.connectionState });
    };
    this.pc.oniceconnectionstatechange = () => this.maybeAutoRestart();
  }

  /** ICE restarts started by this side so far. */
  get iceRestarts(): number {
    return this._iceRestarts;
  }

  /**
   * Restart ICE: new credentials, new candidates, through a new offer
   * (`onnegotiationneeded`; glare is resolved by perfect negotiation). A side
   * that may not offer yet (an answerer before the first offer) asks the
   * remote side to restart instead (`signal {restart: true}`).
   */
  restartIce(reason = 'requested', origin: 'local' | 'remote' = 'local'): void {
    if (this._closed) return;
    this.lastRestartAt = Date.now();
    if (this.awaitingFirstOffer || this.answerOnly) {
      this.logger.info(`peer ${this.id}: asking the remote side to restart ICE (${reason})`);
      this.send({ restart: true });
      return;
    }
    this.logger.info(`peer ${this.id}: restarting ICE (${reason})`);
    this._iceRestarts++;
    this.emit('icerestart', { origin, reason });
    this.pc.restartIce();
  }

  /** `disconnected` or `failed`: restart, at most every few seconds while it lasts. */
  private maybeAutoRestart(): void {
    if (this._closed) return;
    const state = this.pc.iceConnectionState;
    if (state !== 'disconnected' && state !== 'failed') return;
    const wait = this.lastRestartAt + AUTO_RESTART_INTERVAL_MS - Date.now();
    if (wait <= 0) {
      this.restartIce(`ICE ${state}`);
      return;
    }
    if (this.restartTimer !== null) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.maybeAutoRestart();
    }, wait);
  }

  get closed(): boolean {
    return this._closed;
  }

  get connectionState(): PeerConnectionState {
    return this._closed ? 'closed' : this.pc.connectionState;
  }

  /**
   * Send `stream`'s first live audio and video track (or nothing for a kind it
   * lacks). A kind sent before is switched with `replaceTrack`, which needs no
   * renegotiation; a new kind is added with `addTrack` synchronously, before
   * this method first awaits, so a caller may handle an offer right after it.
   */
  async setLocalTracks(stream: MediaStream | null): Promise<void> {
    if (this._closed) return;
    const replacements: Promise<void>[] = [];
    for (const kind of KINDS) {
      const track = stream?.getTracks().find((t) => t.kind === kind && t.readyState === 'live') ?? null;
      const sender = this.senders.get(kind);
      if (sender) {
        if (sender.track !== track) replacements.push(sender.replaceTrack(track));
        if (track && stream) this.enableSending(sender, stream);
      } else if (track && stream) {
        // Reuses a transceiver of the same kind that never sent, if any.
        this.senders.set(kind, this.pc.addTrack(track, stream));
      }
    }
    await Promise.all(replacements);
  }

  /**
   * A sender that so far only received (from `ensureReceiving`) must also be
   * told to send; this renegotiates, so the stream association goes along.
   */
  private enableSending(sender: RTCRtpSender, stream: MediaStream): void {
    const transceiver = this.pc.getTransceivers().find((t) => t.sender === sender);
    if (!transceiver) return;
    const direction = transceiver.direction;
    if (direction !== 'recvonly' && direction !== 'inactive') return;
    transceiver.direction = direction === 'recvonly' ? 'sendrecv' : 'sendonly';
    sender.setStreams(stream);
  }

  /**
   * For the offerer: make sure the first offer has an audio and a video
   * section even without local media, so the remote side can always send both.
   */
  ensureReceiving(): void {
    if (this._closed) return;
    for (const kind of KINDS) {
      if (!this.senders.has(kind)) {
        this.senders.set(kind, this.pc.addTransceiver(kind, { direction: 'recvonly' }).sender);
      }
    }
  }

  /**
   * Open a data channel toward the remote side. The first one adds an SCTP
   * section to the session, which renegotiates (perfect negotiation as usual).
   */
  createDataChannel(label: string, init: RTCDataChannelInit = {}): RTCDataChannel {
    if (this._closed) throw new Error(`peer ${this.id} is closed`);
    return this.pc.createDataChannel(label, init);
  }

  /** Apply a signal from the remote side; signals are applied in arrival order. */
  handleSignal(message: PeerMessage): Promise<void> {
    this.incoming = this.incoming
      .then(() => this.applySignal(message))
      .catch((err: unknown) => this.logger.warn(`peer ${this.id}: signal failed`, err));
    return this.incoming;
  }

  /** Close the connection and drop listeners. Idempotent. */
  close(): void {
    if (this._closed) return;
    this._closed = true;
    const pc = this.pc;
    pc.onnegotiationneeded = null;
    pc.onicecandidate = null;
    pc.ontrack = null;
    pc.ondatachannel = null;
    pc.onconnectionstatechange = null;
    pc.oniceconnectionstatechange = null;
    if (this.restartTimer !== null) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    pc.close();
    for (const track of this.remoteStream.getTracks()) this.remoteStream.removeTrack(track);
    this.pendingCandidates = [];
    this.emit('connectionstatechange', { state: 'closed' });
    this.removeAllListeners();
  }

  private async negotiate(): Promise<void> {
    // The answerer's tracks ride on its answer to the first offer; offering
    // before it would be the first-offer glare the protocol rules out.
    if (this._closed || this.awaitingFirstOffer || this.answerOnly) return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.sendLocalDescription();
    } catch (err) {
      if (!this._closed) this.logger.warn(`peer ${this.id}: offer failed`, err);
    } finally {
      this.makingOffer = false;
    }
  }

  private async applySignal(message: PeerMessage): Promise<void> {
    if (this._closed) return;
    if ('restart' in message) {
      // The remote side's first offer is on its way anyway; an answer-only side cannot offer.
      if (this.awaitingFirstOffer || this.answerOnly) return;
      this.restartIce('asked by the remote side', 'remote');
    } else if ('description' in message) {
      await this.applyDescription(message.description);
    } else if (this.pc.remoteDescription) {
      await this.addCandidate(message.candidate);
    } else {
      this.pendingCandidates.push(message.candidate);
    }
  }

  private async applyDescription(description: WireDescription): Promise<void> {
    const pc = this.pc;
    const readyForOffer =
      !this.makingOffer && (pc.signalingState === 'stable' || this.settingRemoteAnswerPending);
    const offerCollision = description.type === 'offer' && !readyForOffer;
    this.ignoreOffer = !this.polite && offerCollision;
    if (this.ignoreOffer) {
      this.logger.debug(`peer ${this.id}: ignoring colliding offer (impolite)`);
      return;
    }
    this.settingRemoteAnswerPending = description.type === 'answer';
    try {
      // A polite side in have-local-offer gets an implicit rollback here.
      await pc.setRemoteDescription(description);
    } finally {
      this.settingRemoteAnswerPending = false;
    }
    if (this._closed) return;
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      this.sendLocalDescription();
    }
    if (this.awaitingFirstOffer) {
      this.awaitingFirstOffer = false;
    }
    await this.flushCandidates();
  }

  private async flushCandidates(): Promise<void> {
    const pending = this.pendingCandidates;
    this.pendingCandidates = [];
    for (const candidate of pending) await this.addCandidate(candidate);
  }

  private async addCandidate(candidate: WireCandidate | null): Promise<void> {
    try {
      // No argument means end-of-candidates.
      if (candidate) await this.pc.addIceCandidate(candidate);
      else await this.pc.addIceCandidate();
    } catch (err) {
      // Candidates of an offer we ignored cannot apply; anything else is worth a word.
      if (!this.ignoreOffer && !this._closed) {
        this.logger.warn(`peer ${this.id}: addIceCandidate failed`, err);
      }
    }
  }

  private sendLocalDescription(): void {
    const local = this.pc.localDescription;
    if (!local || this._closed) return;
    this.send({ description: { type: local.type, sdp: local.sdp } });
  }

  private sendCandidate(candidate: RTCIceCandidate | null): void {
    if (this._closed) return;
    this.send({ candidate: candidate ? toWireCandidate(candidate) : null });
  }

  private addRemoteTrack(track: MediaStreamTrack, streams: readonly MediaStream[]): void {
    if (this._closed) return;
    const stream = this.remoteStream;
    if (!stream.getTrackById(track.id)) stream.addTrack(track);
    track.addEventListener(
      'ended',
      () => {
        if (this._closed || !stream.getTrackById(track.id)) return;
        stream.removeTrack(track);
        this.emit('trackended', { track, stream });
      },
      { once: true },
    );
    this.emit('track', { track, stream, streams });
  }
}

/** The wire form leaves out what the browser left empty; an empty candidate is end-of-candidates. */
export function toWireCandidate(candidate: RTCIceCandidate): WireCandidate | null {
  const init = candidate.toJSON();
  if (!init.candidate) return null;
  const wire: WireCandidate = { candidate: init.candidate };
  if (init.sdpMid != null) wire.sdpMid = init.sdpMid;
  if (init.sdpMLineIndex != null) wire.sdpMLineIndex = init.sdpMLineIndex;
  if (init.usernameFragment != null) wire.usernameFragment = init.usernameFragment;
  return wire;
}
