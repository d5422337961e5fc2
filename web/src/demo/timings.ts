import type { Room, Unsubscribe } from '../sdk';

/** How often a new video track's receiver is asked whether it decoded a frame yet. */
const POLL_MS = 20;
/** A track that decodes nothing for this long is no longer watched. */
const WATCH_MS = 30_000;

/**
 * When media showed up, for tests (`window.mikotoDemo.timings()`): when the
 * forwarded room's `down` connection first connected, and when each
 * participant's latest video track decoded its first frame (its receiver's
 * `inbound-rtp` `framesDecoded`, polled every 20 ms). `Date.now()` ms.
 */
export class MediaTimings {
  /** The current forwarding's `down` connection's first `connected`; null while meshing. */
  downConnectedAt: number | null = null;
  readonly firstVideoAt: Record<string, number> = {};
  private room: Room | null = null;
  private unsubscribes: Unsubscribe[] = [];

  attach(room: Room): void {
    this.detach();
    this.room = room;
    this.unsubscribes = [
      room.on('mode', () => {
        this.downConnectedAt = null;
      }),
      room.on('forward:connection', ({ pc, state }) => {
        if (pc === 'down' && state === 'connected' && this.downConnectedAt === null) this.downConnectedAt = Date.now();
      }),
      room.on('track', ({ participantId, track }) => {
        if (track.kind === 'video') void this.watch(room, participantId, track).catch(() => undefined);
      }),
    ];
  }

  detach(): void {
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    this.unsubscribes = [];
    this.room = null;
    this.downConnectedAt = null;
    for (const key of Object.keys(this.firstVideoAt)) delete this.firstVideoAt[key];
  }

  private async watch(room: Room, participantId: string, track: MediaStreamTrack): Promise<void> {
    const deadline = Date.now() + WATCH_MS;
    while (this.room === room && track.readyState === 'live' && Date.now() < deadline) {
      const receiver = room.receivers(participantId).find((r) => r.track === track);
      if (receiver && (await framesDecoded(receiver)) > 0) {
        if (this.room === room) this.firstVideoAt[participantId] = Date.now();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
}

async function framesDecoded(receiver: RTCRtpReceiver): Promise<number> {
  let frames = 0;
  (await receiver.getStats()).forEach((entry: RTCStats) => {
    if (entry.type === 'inbound-rtp') frames += (entry as RTCInboundRtpStreamStats).framesDecoded ?? 0;
  });
  return frames;
}
