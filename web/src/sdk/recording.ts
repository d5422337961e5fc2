import { Emitter } from './events';
import type { Logger } from './log';
import { Peer, type PeerConnectionState, type PeerMessage } from './peer';
import type { ParticipantId } from './types';

export interface RecordingUpstreamEvents {
  /** The connection to the worker changed state (`closed` once it is closed). */
  connectionstatechange: { state: PeerConnectionState };
}

/** What a `Room` hands the upstream it opens; not for apps (the room opens it by itself). */
export interface RecordingUpstreamInit {
  /** The recording's id. */
  recording: string;
  /** The worker's hidden participant id. */
  worker: ParticipantId;
  stream: MediaStream | null;
  configuration: RTCConfiguration;
  send: (message: PeerMessage) => void;
  logger: Logger;
}

/** The worker writes VP8 and Opus without transcoding (protocol.md, "Files and catalog"). */
const RECORDED_CODECS: Record<string, string> = { video: 'video/vp8', audio: 'audio/opus' };

/**
 * Our media on its way to the room's recording worker (protocol.md,
 * "Recording"): one peer connection, offered by us with the SDK's `Peer` (the
 * worker is the polite side and answers receive-only). Our tracks go out
 * send-only, with the codecs the recorder keeps preferred. The room opens one
 * while a recording is active, follows its local stream, and closes it when
 * the recording ends or moves to another worker.
 */
export class RecordingUpstream extends Emitter<RecordingUpstreamEvents> {
  readonly recording: string;
  readonly worker: ParticipantId;

  private readonly peer: Peer;
  private readonly prepared = new WeakSet<RTCRtpTransceiver>();

  constructor(init: RecordingUpstreamInit) {
    super();
    this.recording = init.recording;
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

  /** Send-only, and the recorder's codec first: the worker answers with the offer's first one it has. */
  private prepareTransceivers(): void {
    if (this.peer.closed) return;
    for (const transceiver of this.pc.getTransceivers()) {
      if (this.prepared.has(transceiver) || !transceiver.sender.track) continue;
      this.prepared.add(transceiver);
      if (transceiver.direction === 'sendrecv') transceiver.direction = 'sendonly';
      const kind = transceiver.sender.track.kind;
      const wanted = RECORDED_CODECS[kind];
      const codecs = typeof RTCRtpReceiver.getCapabilities === 'function' ? RTCRtpReceiver.getCapabilities(kind)?.codecs : undefined;
      if (!wanted || !codecs || typeof transceiver.setCodecPreferences !== 'function') continue;
      const first = codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
      if (first.length === 0) continue;
      try {
        transceiver.setCodecPreferences([...first, ...codecs.filter((c) => c.mimeType.toLowerCase() !== wanted)]);
      } catch {
        // A browser that refuses the list keeps its own order; VP8 and Opus lead it in practice.
      }
    }
  }
}
