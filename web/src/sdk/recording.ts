import { MediaUpstream, type MediaUpstreamEvents, type MediaUpstreamInit } from './upstream';

export type RecordingUpstreamEvents = MediaUpstreamEvents;

/** What a `Room` hands the upstream it opens; not for apps (the room opens it by itself). */
export interface RecordingUpstreamInit extends MediaUpstreamInit {
  /** The recording's id. */
  recording: string;
}

/**
 * Our media on its way to the room's recording worker (protocol.md,
 * "Recording"): a `MediaUpstream` (send-only, VP8 and Opus first, which the
 * worker stores as received) with signals tagged `pc: "record"`. The room
 * opens one while a recording is active, follows its local stream, and closes
 * it when the recording ends or moves to another worker.
 */
export class RecordingUpstream extends MediaUpstream {
  readonly recording: string;

  constructor(init: RecordingUpstreamInit) {
    super(init);
    this.recording = init.recording;
  }
}
