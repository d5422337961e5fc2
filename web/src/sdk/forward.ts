import { Emitter } from './events';
import type { Logger } from './log';
import { Peer, type PeerConnectionState, type PeerMessage } from './peer';
import type { ParticipantId } from './types';
import { MediaUpstream } from './upstream';

/** The two connections to a forwarding worker, as the signal's `pc` tag names them. */
export type ForwardPc = 'up' | 'down';

export interface ForwardedMediaEvents {
  /** A publisher's track arrived; `stream` is that publisher's one stream (stable while we forward). */
  track: { participantId: ParticipantId; track: MediaStreamTrack; stream: MediaStream };
  /** A publisher's track ended, or the worker stopped sending it; it was removed from `stream`. */
  trackended: { participantId: ParticipantId; track: MediaStreamTrack; stream: MediaStream };
  /** One of the two connections changed state (`closed` once closed). */
  connectionstatechange: { pc: ForwardPc; state: PeerConnectionState };
}

/** What a `Room` hands the forwarded media it opens; not for apps (the room opens it by itself). */
export interface ForwardedMediaInit {
  /** The forwarding worker's hidden participant id. */
  worker: ParticipantId;
  stream: MediaStream | null;
  configuration: RTCConfiguration;
  send: (pc: ForwardPc, message: PeerMessage) => void;
  logger: Logger;
}

/**
 * Our side of a forwarded room (protocol.md, "Forwarding (group calls)"): no
 * connection with any participant, two with the worker.
 *
 * - `up`: a `MediaUpstream`: we offer our tracks send-only, VP8 and Opus
 *   first; the worker answers receive-only.
 * - `down`: the worker offers one send-only transceiver per track of every
 *   other participant, and offers again when someone comes or goes; we only
 *   answer. A transceiver's stream id (its `a=msid` stream) is the
 *   publisher's participant id, so tracks are regrouped into one
 *   `MediaStream` per publisher, as a mesh peer gives one per participant.
 */
export class ForwardedMedia extends Emitter<ForwardedMediaEvents> {
  readonly worker: ParticipantId;

  private readonly up: MediaUpstream;
  private readonly down: Peer;
  private readonly logger: Logger;
  private readonly streams = new Map<ParticipantId, MediaStream>();
  /** The browser's msid streams we listen to for `removetrack` (an `inactive` transceiver). */
  private readonly watched = new WeakSet<MediaStream>();
  private _closed = false;

  constructor(init: ForwardedMediaInit) {
    super();
    this.worker = init.worker;
    this.logger = init.logger;
    this.up = new MediaUpstream({
      worker: init.worker,
      stream: init.stream,
      configuration: init.configuration,
      send: (message) => init.send('up', message),
      logger: init.logger,
    });
    this.up.on('connectionstatechange', ({ state }) => this.emit('connectionstatechange', { pc: 'up', state }));
    this.down = new Peer({
      id: init.worker,
      // The worker offers; as the answerer we are the polite side.
      polite: true,
      role: 'answerer',
      answerOnly: true,
      configuration: init.configuration,
      send: (message) => init.send('down', message),
      logger: init.logger,
    });
    this.down.on('track', ({ track, streams }) => this.onTrack(track, streams));
    this.down.on('connectionstatechange', ({ state }) => this.emit('connectionstatechange', { pc: 'down', state }));
  }

  /** The connection carrying our media to the worker. */
  get upConnection(): RTCPeerConnection {
    return this.up.pc;
  }

  /** The connection carrying everyone else's media from the worker. */
  get downConnection(): RTCPeerConnection {
    return this.down.pc;
  }

  /** The `down` connection's state: how every other participant's media reaches us. */
  get connectionState(): PeerConnectionState {
    return this.down.connectionState;
  }

  get closed(): boolean {
    return this._closed;
  }

  /** A publisher's stream, once a first track of theirs arrived. */
  streamOf(participant: ParticipantId): MediaStream | null {
    return this.streams.get(participant) ?? null;
  }

  /** The receivers carrying a publisher's live tracks (for `getStats()`). */
  receivers(participant: ParticipantId): RTCRtpReceiver[] {
    const stream = this.streams.get(participant);
    if (!stream || this._closed) return [];
    return this.down.pc.getReceivers().filter((r) => stream.getTrackById(r.track.id) !== null);
  }

  setLocalStream(stream: MediaStream | null): Promise<void> {
    return this.up.setLocalStream(stream);
  }

  /** A signal from the worker, by its `pc` tag. */
  handleSignal(pc: ForwardPc, message: PeerMessage): void {
    if (this._closed) return;
    if (pc === 'up') this.up.handleSignal(message);
    else void this.down.handleSignal(message);
  }

  /** Restart ICE on `up` (a new offer) and ask the worker to restart `down`. */
  restartIce(reason: string): void {
    if (this._closed) return;
    this.up.restartIce(reason);
    this.down.restartIce(reason);
  }

  /** A participant left: drop their stream (the worker turns their transceivers `inactive`). */
  participantLeft(participant: ParticipantId): void {
    const stream = this.streams.get(participant);
    if (!stream) return;
    this.streams.delete(participant);
    for (const track of stream.getTracks()) stream.removeTrack(track);
  }

  /** Close both connections. Idempotent. */
  close(): void {
    if (this._closed) return;
    this._closed = true;
    this.up.close();
    this.down.close();
    // Both connections said `closed` as they closed.
    for (const participant of [...this.streams.keys()]) this.participantLeft(participant);
    this.removeAllListeners();
  }

  private onTrack(track: MediaStreamTrack, streams: readonly MediaStream[]): void {
    if (this._closed) return;
    const msid = streams[0];
    if (!msid) {
      this.logger.warn(`forward ${this.worker}: a track without a stream id; ignored`);
      return;
    }
    const participant = msid.id;
    let stream = this.streams.get(participant);
    if (!stream) {
      stream = new MediaStream();
      this.streams.set(participant, stream);
    }
    if (!stream.getTrackById(track.id)) stream.addTrack(track);
    track.addEventListener('ended', () => this.dropTrack(participant, track), { once: true });
    if (!this.watched.has(msid)) {
      this.watched.add(msid);
      // The worker re-offered with this track's transceiver `inactive` (its publisher unpublished it).
      msid.addEventListener('removetrack', (event) => {
        this.dropTrack(participant, (event as MediaStreamTrackEvent).track);
      });
    }
    this.emit('track', { participantId: participant, track, stream });
  }

  private dropTrack(participant: ParticipantId, track: MediaStreamTrack): void {
    const stream = this.streams.get(participant);
    if (this._closed || !stream?.getTrackById(track.id)) return;
    stream.removeTrack(track);
    this.emit('trackended', { participantId: participant, track, stream });
  }
}
