import { Emitter } from './events';
import type { Logger } from './log';
import { Peer, type PeerConnectionState, type PeerMessage } from './peer';
import type { ParticipantId } from './types';

export interface MediaUpstreamEvents {
  /** The connection to the worker changed state (`closed` once it is closed). */
  connectionstatechange: { state: PeerConnectionState };
}

/** What a `Room` hands an upstream it opens; not for apps (the room opens them by itself). */
export interface MediaUpstreamInit {
  /** The worker's hidden participant id. */
  worker: ParticipantId;
  stream: MediaStream | null;
  configuration: RTCConfiguration;
  send: (message: PeerMessage) => void;
  logger: Logger;
}

/**
 * Media workers take VP8 and Opus as they come, without transcoding (the
 * recorder writes them to WebM, the forwarder passes them on).
 */
const WORKER_CODECS: Record<string, string> = { video: 'video/vp8', audio: 'audio/opus' };
/**
 * Left out of what we offer a worker. With RTX, Chrome's first packets are
 * often bandwidth probes on the RTX SSRC, and the worker (aiortc) then sends
 * its keyframe requests (PLI) to that SSRC, which Chrome ignores: a late
 * subscriber of a forwarded room waited seconds for a keyframe. Without RTX,
 * probes and retransmissions use the media SSRC.
 */
const NOT_FOR_WORKERS = new Set(['video/rtx']);

/**
 * Our media on its way to a media worker: one peer connection, offered by us
 * with the SDK's `Peer` (the worker is the polite side and answers
 * receive-only). Our tracks go out send-only, with the codecs workers keep
 * preferred; without tracks the offer carries only the `ctl` data channel, so
 * the worker still hears from us. Follows the room's local stream with
 * `replaceTrack`. The recording upstream (`pc: "record"`) and a forwarded
 * room's `pc: "up"` are both one of these.
 */
export class MediaUpstream extends Emitter<MediaUpstreamEvents> {
  readonly worker: ParticipantId;

  private readonly peer: Peer;
  private readonly prepared = new WeakSet<RTCRtpTransceiver>();

  constructor(init: MediaUpstreamInit) {
    super();
    this.worker = init.worker;
    this.peer = new Peer({
      id: init.worker,
      polite: false,
      role: 'offerer',
      configuration: init.configuration,
      send: init.send,
      logger: init.logger,
    });
    this.peer.on('connectionstatechange', (e) => this.emit('connectionstatechange', e));
    void this.setLocalStream(init.stream);
  }

  /** The connection to the worker, for `getStats()` and the senders' parameters. */
  get pc(): RTCPeerConnection {
    return this.peer.pc;
  }

  get connectionState(): PeerConnectionState {
    return this.peer.connectionState;
  }

  get closed(): boolean {
    return this.peer.closed;
  }

  /**
   * Send `stream`'s audio and video (replaceTrack for a kind already sent, so
   * a camera switch or a screen share needs no renegotiation).
   */
  async setLocalStream(stream: MediaStream | null): Promise<void> {
    const replaced = this.peer.setLocalTracks(stream);
    // A new kind's transceiver exists now (added synchronously), before its offer is made.
    this.prepareTransceivers();
    await replaced;
  }

  /** A signal from the worker (the room routes them here). */
  handleSignal(message: PeerMessage): void {
    void this.peer.handleSignal(message);
  }

  restartIce(reason: string): void {
    this.peer.restartIce(reason);
  }

  /** Close the connection. Idempotent. */
  close(): void {
    this.peer.close();
    this.removeAllListeners();
  }

  /** Send-only, the workers' codec first (a worker answers with the offer's first one it has), no RTX. */
  private prepareTransceivers(): void {
    if (this.peer.closed) return;
    for (const transceiver of this.pc.getTransceivers()) {
      if (this.prepared.has(transceiver) || !transceiver.sender.track) continue;
      this.prepared.add(transceiver);
      if (transceiver.direction === 'sendrecv') transceiver.direction = 'sendonly';
      const kind = transceiver.sender.track.kind;
      const wanted = WORKER_CODECS[kind];
      const codecs = typeof RTCRtpReceiver.getCapabilities === 'function' ? RTCRtpReceiver.getCapabilities(kind)?.codecs : undefined;
      if (!wanted || !codecs || typeof transceiver.setCodecPreferences !== 'function') continue;
      const first = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
      if (first.length === 0) continue;
      const rest = codecs.filter((c) => {
        const mime = c.mimeType.toLowerCase();
        return mime !== wanted && !NOT_FOR_WORKERS.has(mime);
      });
      try {
        transceiver.setCodecPreferences([...first, ...rest]);
      } catch {
        // A browser that refuses the list keeps its own (VP8 and Opus lead it in practice, with RTX).
      }
    }
  }
}
