import {
  IncomingTransfer,
  sha256Hex,
  type ActiveRecording,
  type CallStateEvent,
  type ConnectionState,
  type EchoReport,
  type EchoTest,
  type FileTransfer,
  type ParticipantState,
  type PresenceState,
  type Room,
  type RoomMode,
  type SignalingClient,
} from '../sdk';
import type { DemoApp, DemoEvent } from './app';
import type { EchoPanel, EchoPanelState } from './echo';
import { pseudoRandomBytes, type FileRecord } from './files';
import type { RecordingSummary } from './recordings';
import type { InboundStats, OutboundStats } from './stats';

/** What `sendFile` sends: bytes, a blob, or `{random: size, seed}` pseudo-random bytes made in the page. */
export type FileData = Uint8Array | ArrayBuffer | Blob | number[] | { random: number; seed?: number };

export interface SendFileHookOptions {
  /** Upload through the node's relay. */
  relay?: boolean;
  /** A participant id; default: everyone else. */
  to?: string | null;
  mime?: string;
  /** Fall back to the relay when no peer-to-peer path is up within this time. */
  p2pTimeoutMs?: number;
  /** Close the transfer's data channel once this many bytes were sent (tests of resume). */
  interruptAt?: number;
}

/** Per remote participant: what a test needs to tell that media flows. */
export interface PeerStats {
  connectionState: RTCPeerConnectionState;
  video: { framesDecoded: number; framesReceived: number; bytesReceived: number; frameWidth: number };
  audio: { packetsReceived: number; bytesReceived: number };
}

/** What we send to the recording worker: summed `outbound-rtp` counters of the upstream connection. */
export interface UpstreamStats {
  connectionState: RTCPeerConnectionState;
  video: { framesEncoded: number; framesSent: number; bytesSent: number; frameWidth: number; frameHeight: number };
  audio: { packetsSent: number; bytesSent: number };
}

export interface ParticipantSnapshot {
  id: string;
  user: string;
  name: string;
  state: ParticipantState;
  /** Signaling presence: `reconnecting` while their transport is lost. */
  connection: PresenceState;
  connectionState: RTCPeerConnectionState;
}

/** `window.mikotoDemo`: test and debugging access to the live session. */
export interface MikotoDemo {
  /** The current room, or null before joining and after leaving. */
  readonly room: Room | null;
  /** The page's signaling client (it lives across rooms; null before the first connect). */
  readonly client: SignalingClient | null;
  /** The client's connection state: `idle`, `connecting`, `connected`, `reconnecting`, `disconnected`, `closed`. */
  readonly connectionState: ConnectionState;
  /** The current session id (changes only when a session is lost, not on resume). */
  readonly sessionId: string | null;
  /** The last `call:state` per call id. */
  readonly calls: Readonly<Record<string, CallStateEvent>>;
  /** What is sent (camera, or camera audio + screen). */
  readonly localStream: MediaStream | null;
  /** This tab's user id (the dev token's `sub`). */
  readonly userId: string;
  /** Our participant id once joined. */
  readonly selfId: string | null;
  /** Recent events (status, socket, room, participants, tracks, peer states). */
  readonly events: readonly DemoEvent[];
  /** The RTCPeerConnection toward each remote participant, by participant id (none while the room forwards). */
  peers(): Record<string, RTCPeerConnection>;
  participants(): ParticipantSnapshot[];
  /**
   * Summed `inbound-rtp` counters per remote participant, by participant id:
   * of their peer connection, or (forwarded) of the `down` receivers carrying
   * their tracks, with the `down` connection's state.
   */
  stats(): Promise<Record<string, PeerStats>>;
  /**
   * What the tiles' quality badges and stats overlays last showed: per remote
   * participant, and what we send; `running` while refreshes are scheduled (a
   * room is joined), `visible` while the overlays show.
   */
  tileStats(): {
    running: boolean;
    visible: boolean;
    local: OutboundStats | null;
    remote: Record<string, InboundStats>;
  };
  /** `room.mode` (`mesh` / `forward`); null when not in a room. */
  readonly mode: RoomMode | null;
  /** The forwarding worker's participant id while the room forwards, else null. */
  readonly forwardWorker: string | null;
  /** The two connections to the forwarding worker, or null while the room meshes. */
  forwardConnections(): { up: RTCPeerConnection; down: RTCPeerConnection } | null;
  /**
   * `Date.now()` ms: when the forwarded `down` connection first connected (null
   * while meshing), and each participant's latest video track's first decoded frame.
   */
  timings(): { downConnectedAt: number | null; firstVideoAt: Record<string, number> };
  join(): Promise<void>;
  leave(): Promise<void>;
  /** Close the engine.io transport as a network loss would; the client resumes the session. */
  dropTransport(): void;
  /** `room.restartIce(participantId?)`. */
  restartIce(participantId?: string): void;
  /** One `ping` round trip, ms. */
  ping(): Promise<number>;
  /** The last state seen per file transfer id (both directions). */
  readonly files: Readonly<Record<string, FileRecord>>;
  /** Send a file named `name` to the room; resolves with its id and SHA-256 once offered. */
  sendFile(name: string, data: FileData, options?: SendFileHookOptions): Promise<{ id: string; sha256: string | null }>;
  /** The SHA-256 (hex) of the bytes received for transfer `id`, hashed again here; null until they are all here. */
  received(id: string): Promise<string | null>;
  /** Close the data channel(s) of transfer `id` as a lost connection would; false if unknown. */
  interruptTransfer(id: string): boolean;
  /** Make this page's `file:` data channels fail to open (the sender then falls back to the relay). */
  failP2P(on?: boolean): void;
  /** The SDK's transfer handle. */
  transfer(id: string): FileTransfer | undefined;
  /** Deterministic pseudo-random bytes (see `pseudoRandomBytes`). */
  randomBytes(size: number, seed?: number): Uint8Array;
  /** The echo page's state, as `#echo-state[data-state]`. */
  readonly echoState: EchoPanelState;
  /** The last echo report (null before one came). */
  readonly echoReport: EchoReport | null;
  /** Why the last echo test failed, if it did. */
  readonly echoError: { code: string; message: string } | null;
  /** The SDK's handle of the last echo test (job, worker, state, pc, stream). */
  readonly echoTest: EchoTest | null;
  /** The room the running echo test joined (null when none runs): the worker is never one of its participants. */
  readonly echoRoom: Room | null;
  /** The id of the `<video>` showing the echoed media. */
  readonly echoVideoId: string;
  /** The id of the `<video>` showing the local preview. */
  readonly echoLocalVideoId: string;
  /** `inbound-rtp` counters of the running echo test's connection, by worker id (`{}` when none runs). */
  echoStats(): Promise<Record<string, PeerStats>>;
  /** Run the echo test again (what "Run again" does). */
  startEcho(): Promise<void>;
  /** Stop it (releases the worker). */
  stopEcho(): Promise<void>;
  /** The room's running recording (`room.recording`), null when not recorded or not in a room. */
  readonly recording: Readonly<ActiveRecording> | null;
  /** Whether our token has grant `record` (the Start / Stop recording buttons show). */
  readonly canRecord: boolean;
  /** What "Start recording" / "Stop recording" do; reject with the error they show. */
  startRecording(): Promise<void>;
  stopRecording(): Promise<void>;
  /** The connection sending our media to the recording worker (null while not recorded). */
  recordingConnection(): RTCPeerConnection | null;
  /** Reload and return the recordings list (`/api/recordings`; [] without grant `record`). */
  refreshRecordings(): Promise<RecordingSummary[]>;
  /** Its `outbound-rtp` counters; null while not recorded. */
  recordingStats(): Promise<UpstreamStats | null>;
}

declare global {
  interface Window {
    mikotoDemo: MikotoDemo;
  }
}

export function installHooks(app: DemoApp, echo: EchoPanel): MikotoDemo {
  const hooks: MikotoDemo = {
    get room() {
      return app.room;
    },
    get client() {
      return app.client;
    },
    get connectionState() {
      return app.connectionState;
    },
    get sessionId() {
      return app.client?.sessionId ?? null;
    },
    get calls() {
      return app.calls;
    },
    get localStream() {
      return app.outgoing;
    },
    get userId() {
      return app.userId;
    },
    get selfId() {
      return app.room?.self?.id ?? null;
    },
    get events() {
      return app.events;
    },
    peers: () => app.peers(),
    participants: () =>
      [...(app.room?.participants.values() ?? [])].map((p) => ({
        id: p.id,
        user: p.user,
        name: p.name,
        state: { ...p.state },
        connection: p.connection,
        connectionState: p.connectionState,
      })),
    stats: async () => {
      const room = app.room;
      if (room?.mode === 'forward') {
        const entries = await Promise.all(
          [...room.participants.values()].map(
            async (p) => [p.id, await receiverStats(room.receivers(p.id), p.connectionState)] as const,
          ),
        );
        return Object.fromEntries(entries);
      }
      const entries = await Promise.all(
        Object.entries(app.peers()).map(async ([id, pc]) => [id, await peerStats(pc)] as const),
      );
      return Object.fromEntries(entries);
    },
    tileStats: () => ({
      running: app.stats.running,
      visible: app.stats.visible,
      local: app.stats.local,
      remote: Object.fromEntries(app.stats.remote),
    }),
    get mode() {
      return app.room?.mode ?? null;
    },
    get forwardWorker() {
      return app.room?.forwardWorker ?? null;
    },
    forwardConnections: () => app.room?.forwardConnections() ?? null,
    timings: () => ({ downConnectedAt: app.timings.downConnectedAt, firstVideoAt: { ...app.timings.firstVideoAt } }),
    join: () => app.join(),
    leave: () => app.leave(),
    dropTransport: () => app.dropTransport(),
    restartIce: (participantId?: string) => app.room?.restartIce(participantId),
    ping: async () => {
      const client = app.client;
      if (!client) throw new Error('not connected');
      return client.ping();
    },
    get files() {
      return app.files.records;
    },
    sendFile: async (name, data, options = {}) => {
      const blob = toBlob(data, options.mime);
      const transfer = await app.files.send(new File([blob], name, { type: blob.type }), {
        ...(options.relay !== undefined ? { relay: options.relay } : {}),
        ...(options.to !== undefined ? { to: options.to } : {}),
        ...(options.mime !== undefined ? { mime: options.mime } : {}),
        ...(options.p2pTimeoutMs !== undefined ? { p2pTimeoutMs: options.p2pTimeoutMs } : {}),
      });
      const at = options.interruptAt;
      if (at !== undefined) {
        const timer = setInterval(() => {
          if (transfer.final) clearInterval(timer);
          else if (transfer.bytesSent >= at) {
            clearInterval(timer);
            transfer.interrupt();
          }
        }, 5);
      }
      return { id: transfer.id, sha256: transfer.sha256 };
    },
    received: async (id) => {
      const transfer = app.files.transfer(id);
      if (!(transfer instanceof IncomingTransfer) || !transfer.blob) return null;
      return sha256Hex(transfer.blob);
    },
    interruptTransfer: (id) => {
      const transfer = app.files.transfer(id);
      if (!transfer) return false;
      transfer.interrupt();
      return true;
    },
    failP2P: (on = true) => app.files.failP2P(on),
    transfer: (id) => app.files.transfer(id),
    randomBytes: (size, seed) => pseudoRandomBytes(size, seed),
    get echoState() {
      return echo.state;
    },
    get echoReport() {
      return echo.report;
    },
    get echoError() {
      return echo.error?.toJSON() ?? null;
    },
    get echoTest() {
      return echo.test;
    },
    get echoRoom() {
      return echo.echoRoom;
    },
    echoVideoId: 'echo-remote',
    echoLocalVideoId: 'echo-local',
    echoStats: async () => {
      const test = echo.test;
      if (!test || test.state === 'ended') return {};
      return { [test.worker]: await peerStats(test.pc) };
    },
    startEcho: () => echo.start(),
    stopEcho: () => echo.stop(),
    get recording() {
      return app.room?.recording ?? null;
    },
    get canRecord() {
      return app.canRecord;
    },
    startRecording: () => app.recording.start(),
    stopRecording: () => app.recording.stop(),
    recordingConnection: () => app.room?.recordingConnection ?? null,
    refreshRecordings: () => app.recordings.refresh(),
    recordingStats: async () => {
      const pc = app.room?.recordingConnection;
      return pc ? upstreamStats(pc) : null;
    },
  };
  window.mikotoDemo = hooks;
  return hooks;
}

export async function peerStats(pc: RTCPeerConnection): Promise<PeerStats> {
  return sumInbound([await pc.getStats()], pc.connectionState);
}

/** The counters of some receivers (one participant's, on a connection shared with others). */
export async function receiverStats(
  receivers: RTCRtpReceiver[],
  connectionState: RTCPeerConnectionState,
): Promise<PeerStats> {
  return sumInbound(await Promise.all(receivers.map((r) => r.getStats())), connectionState);
}

function sumInbound(reports: RTCStatsReport[], connectionState: RTCPeerConnectionState): PeerStats {
  const result: PeerStats = {
    connectionState,
    video: { framesDecoded: 0, framesReceived: 0, bytesReceived: 0, frameWidth: 0 },
    audio: { packetsReceived: 0, bytesReceived: 0 },
  };
  for (const report of reports) {
    report.forEach((entry: RTCStats) => {
      if (entry.type !== 'inbound-rtp') return;
      const rtp = entry as RTCInboundRtpStreamStats;
      if (rtp.kind === 'video') {
        result.video.framesDecoded += rtp.framesDecoded ?? 0;
        result.video.framesReceived += rtp.framesReceived ?? 0;
        result.video.bytesReceived += rtp.bytesReceived ?? 0;
        result.video.frameWidth = Math.max(result.video.frameWidth, rtp.frameWidth ?? 0);
      } else if (rtp.kind === 'audio') {
        result.audio.packetsReceived += rtp.packetsReceived ?? 0;
        result.audio.bytesReceived += rtp.bytesReceived ?? 0;
      }
    });
  }
  return result;
}

export async function upstreamStats(pc: RTCPeerConnection): Promise<UpstreamStats> {
  const result: UpstreamStats = {
    connectionState: pc.connectionState,
    video: { framesEncoded: 0, framesSent: 0, bytesSent: 0, frameWidth: 0, frameHeight: 0 },
    audio: { packetsSent: 0, bytesSent: 0 },
  };
  const report = await pc.getStats();
  report.forEach((entry: RTCStats) => {
    if (entry.type !== 'outbound-rtp') return;
    const rtp = entry as RTCOutboundRtpStreamStats;
    if (rtp.kind === 'video') {
      result.video.framesEncoded += rtp.framesEncoded ?? 0;
      result.video.framesSent += rtp.framesSent ?? 0;
      result.video.bytesSent += rtp.bytesSent ?? 0;
      result.video.frameWidth = rtp.frameWidth ?? 0;
      result.video.frameHeight = rtp.frameHeight ?? 0;
    } else if (rtp.kind === 'audio') {
      result.audio.packetsSent += rtp.packetsSent ?? 0;
      result.audio.bytesSent += rtp.bytesSent ?? 0;
    }
  });
  return result;
}

function toBlob(data: FileData, mime = 'application/octet-stream'): Blob {
  if (data instanceof Blob) return data;
  if (data instanceof ArrayBuffer) return new Blob([data], { type: mime });
  if (data instanceof Uint8Array) return new Blob([new Uint8Array(data)], { type: mime });
  if (Array.isArray(data)) return new Blob([new Uint8Array(data)], { type: mime });
  return new Blob([pseudoRandomBytes(data.random, data.seed ?? 1)], { type: mime });
}
