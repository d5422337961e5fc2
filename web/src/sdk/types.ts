/**
 * Wire types of the mikoto-rtc signaling protocol, v1.
 *
 * Mirrors docs/protocol.md; keep the two in step. Names here are the names on
 * the wire, so this module is the only place that knows them.
 */

/** Server-assigned id of one join; unique per join, never a socket id. */
export type ParticipantId = string;
/** The token's `sub`. One user may hold several participants. */
export type UserId = string;
export type RoomName = string;

/** The closed set of error codes the server sends (protocol.md, "Acks and errors"). */
export const SERVER_ERROR_CODES = [
  'bad_request',
  'unauthorized',
  'forbidden',
  'not_found',
  'room_full',
  'rate_limited',
  'conflict',
  'unavailable',
  'internal',
] as const;
export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];

/** Codes only the client produces: no answer in time, or no connection (or session) to send on. */
export type ClientErrorCode = 'timeout' | 'disconnected';
export type ErrorCode = ServerErrorCode | ClientErrorCode;

export interface WireError {
  code: ServerErrorCode;
  message: string;
}

export type AckOk<T extends object = object> = { ok: true } & T;
export interface AckErr {
  ok: false;
  error: WireError;
}
export type Ack<T extends object = object> = AckOk<T> | AckErr;

export interface ParticipantState {
  audio: boolean;
  video: boolean;
  screen: boolean;
  hand: boolean;
  speaking: boolean;
}

export const EMPTY_STATE: Readonly<ParticipantState> = Object.freeze({
  audio: false,
  video: false,
  screen: false,
  hand: false,
  speaking: false,
});

export interface SelfInfo {
  id: ParticipantId;
  user: UserId;
  name: string;
}

/** A participant's signaling presence: `reconnecting` while its transport is lost (grace period). */
export type PresenceState = 'connected' | 'reconnecting';

export interface WireParticipant extends SelfInfo {
  state: ParticipantState;
  /** Absent from older nodes: read as `connected`. */
  connection?: PresenceState;
}

/** An entry of the join ack's `participants`: `polite` is our role toward them. */
export interface JoinedParticipant extends WireParticipant {
  polite: boolean;
}

export interface IceServer {
  urls: string[] | string;
  username?: string;
  credential?: string;
}

export interface WireDescription {
  type: 'offer' | 'answer' | 'pranswer' | 'rollback';
  sdp: string;
}

export interface WireCandidate {
  candidate: string;
  sdpMid?: string;
  sdpMLineIndex?: number;
  usernameFragment?: string;
}

// ---- client -> server payloads and ack results ----

export interface JoinRequest {
  room: RoomName;
  name?: string;
  meta?: Record<string, unknown>;
}

export interface JoinResult {
  room: RoomName;
  seq: number;
  self: SelfInfo;
  participants: JoinedParticipant[];
  iceServers: IceServer[];
  /** The room's running recording, or null (absent from nodes without recording). */
  recording?: ActiveRecording | null;
  /** How the room's media flows now (absent from nodes without forwarding: `mesh`). */
  mode?: RoomMode;
  /** With `mode: forward`: the forwarding worker's hidden participant id. */
  worker?: ParticipantId;
}

export interface LeaveRequest {
  room: RoomName;
}

export type SignalRequest =
  | { room: RoomName; to: ParticipantId; description: WireDescription }
  | { room: RoomName; to: ParticipantId; candidate: WireCandidate | null }
  | { room: RoomName; to: ParticipantId; restart: true };

export interface UpdateRequest {
  room: RoomName;
  state: Partial<ParticipantState>;
}

export interface UpdateResult {
  seq: number;
}

export interface PingRequest {
  t?: number;
}

export interface PingResult {
  /** The request's `t`, echoed. */
  t: number;
  /** The server's clock, Unix ms. */
  now: number;
}

/** `auth:refresh`, the answer to `auth:expiring`. */
export interface AuthRefreshRequest {
  /** A fresh token of the connection's user; its grants replace the old ones. */
  token: string;
}

export interface AuthRefreshResult {
  /** The new token's expiry, Unix ms. */
  expiresAt: number;
}

export interface CallMedia {
  audio: boolean;
  video: boolean;
}

export interface CallInviteRequest {
  /** A user id or several (not the caller). */
  to: UserId | UserId[];
  media: CallMedia;
  /** Default: a new room `call-<callId>`. */
  room?: RoomName;
}

export interface CallInviteResult {
  callId: string;
  room: RoomName;
}

export interface CallIdRequest {
  callId: string;
}

export interface CallDeclineRequest extends CallIdRequest {
  reason?: string;
}

export interface CallActionResult {
  state: CallState;
}

// ---- media jobs (protocol.md, "Media jobs (echo, record, forward)") ----

/** What a media worker does for a `media:request`. */
export type MediaKind = 'echo' | 'record' | 'forward';

export interface MediaRequest {
  /** A room the client is in. */
  room: RoomName;
  kind: MediaKind;
  /** Echo only: seconds of media before the report, 1–60; default the node's (8). */
  duration?: number;
}

/** The `media:request` ack: the job and the worker's hidden participant in the room. */
export interface MediaJob {
  job: string;
  kind: MediaKind;
  /** The worker's participant id in the room: offer to it, `signal` as with any peer. */
  worker: ParticipantId;
}

export interface MediaReleaseRequest {
  job: string;
}

// ---- forwarding (protocol.md, "Forwarding (group calls)") ----

/**
 * How a room's media flows: `mesh` (a peer connection per pair of
 * participants) or `forward` (everyone publishes once to a media worker and
 * receives the others from it).
 */
export type RoomMode = 'mesh' | 'forward';

/** `room:data`: an operator's data message to the room (a room event; the admin API). */
export interface RoomDataEvent {
  room: RoomName;
  seq: number;
  data: unknown;
  /** The operator's user id. */
  by: string;
  topic?: string;
}

/** `mute:request`: an operator asks us to mute (the admin API); the app decides. */
export interface MuteRequestEvent {
  room: RoomName;
  audio: boolean;
  video: boolean;
  by: string;
}

/** The `room:mode` room event. */
export type RoomModeEvent =
  | {
      room: RoomName;
      seq: number;
      mode: 'forward';
      /** The forwarding worker's hidden participant id. */
      worker: ParticipantId;
      /** The previous worker died and this one took over. */
      moved?: boolean;
    }
  | { room: RoomName; seq: number; mode: 'mesh' };

// ---- recording (protocol.md, "Recording") ----

export interface RecordingRequest {
  room: RoomName;
}

/** Why a recording ended: `recording:stop`, the last participant left, or its worker died with no other to take over. */
export type RecordingEndReason = 'stopped' | 'room_empty' | 'worker_lost';

/** A running recording: `recording:state` with `active: true`, without `room` and `seq`. */
export interface ActiveRecording {
  /** The recording's id (its directory and REST id). */
  recording: string;
  active: true;
  /** The user who started it. */
  by: UserId;
  /** Unix ms, the node's clock. */
  startedAt: number;
  /** The media worker's hidden participant id: every participant sends its media there. */
  worker: ParticipantId;
  /**
   * False when the room's forwarding worker records what it already receives:
   * then nobody opens an upstream connection (absent from older nodes: true).
   */
  upstream?: boolean;
  /** The first worker died and this one took over: reconnect to it. */
  moved?: boolean;
}

/** A recording that ended: `recording:state` with `active: false`, without `room` and `seq`. */
export interface EndedRecording {
  recording: string;
  active: false;
  /** Who stopped it; null when the node ended it (`room_empty`, `worker_lost`). */
  by: UserId | null;
  startedAt: number;
  stoppedAt: number;
  reason: RecordingEndReason;
  /** With `worker_lost`: `{code: 'unavailable', message}`. */
  error?: WireError;
}

export type RecordingInfo = ActiveRecording | EndedRecording;

/** The `recording:state` room event. */
export type RecordingStateEvent = RecordingInfo & { room: RoomName; seq: number };

/** The `recording:start` ack: the new state and the seq of its `recording:state`. */
export type RecordingStartResult = ActiveRecording & { seq: number };

export interface RecordingStopResult {
  seq: number;
  recording: string;
}

/** Request payload and ack result of each client -> server event. */
export interface Requests {
  'room:join': [JoinRequest, JoinResult];
  'room:leave': [LeaveRequest, object];
  signal: [SignalRequest, object];
  'participant:update': [UpdateRequest, UpdateResult];
  ping: [PingRequest, PingResult];
  'call:invite': [CallInviteRequest, CallInviteResult];
  'call:accept': [CallIdRequest, CallActionResult];
  'call:decline': [CallDeclineRequest, CallActionResult];
  'call:cancel': [CallIdRequest, CallActionResult];
  'call:hangup': [CallIdRequest, CallActionResult];
  'file:offer': [FileOfferRequest, FileTransferResult];
  'file:accept': [FileIdRequest, FileTransferResult];
  'file:reject': [FileIdRequest, FileTransferResult];
  'file:progress': [FileProgressRequest, FileProgressResult];
  'file:done': [FileDoneRequest, FileTransferResult];
  'file:cancel': [FileCancelRequest, FileTransferResult];
  'file:subscribe': [FileRoomRequest, FileSubscribeResult];
  'file:unsubscribe': [FileRoomRequest, object];
  'media:request': [MediaRequest, MediaJob];
  'media:release': [MediaReleaseRequest, object];
  'recording:start': [RecordingRequest, RecordingStartResult];
  'recording:stop': [RecordingRequest, RecordingStopResult];
  'auth:refresh': [AuthRefreshRequest, AuthRefreshResult];
}
export type RequestName = keyof Requests;

// ---- server -> client events ----

export interface ParticipantJoinedEvent {
  room: RoomName;
  seq: number;
  participant: WireParticipant;
  polite: boolean;
}

/** `kicked` and `closed`: an operator removed the participant (the admin API). */
export type LeaveReason = 'leave' | 'disconnect' | 'timeout' | 'kicked' | 'closed';

export interface ParticipantLeftEvent {
  room: RoomName;
  seq: number;
  id: ParticipantId;
  reason: LeaveReason;
}

export interface ParticipantUpdatedEvent {
  room: RoomName;
  seq: number;
  participant: WireParticipant;
}

/**
 * Which of several connections to a media worker a signal is for (protocol.md,
 * `signal`): `record` is the recording upstream, `up`/`down` forwarding; none for
 * every other connection (a room peer, the echo test).
 */
export type SignalPc = 'up' | 'down' | 'record';

export type SignalEvent = (
  | { room: RoomName; from: ParticipantId; description: WireDescription }
  | { room: RoomName; from: ParticipantId; candidate: WireCandidate | null }
  | { room: RoomName; from: ParticipantId; restart: true }
) & { pc?: SignalPc };

/** One room membership of a session, with the room's current seq. */
export interface SessionRoom {
  room: RoomName;
  id: ParticipantId;
  seq: number;
}

/** The first event on every accepted connection (protocol.md, "Sessions and resume"). */
export interface SessionEvent {
  session: string;
  /** Single use: the next resume needs the token of the latest `session` event. */
  resume: string;
  resumed: boolean;
  rooms: SessionRoom[];
}

export interface DrainingEvent {
  /** Reconnect after this many ms. */
  reconnectIn: number;
}

/** `auth:expiring`: the connection's token expires soon; the client answers with `auth:refresh`. */
export interface AuthExpiringEvent {
  /** Unix ms, the node's clock. */
  expiresAt: number;
}

/** `auth:expired` (`code` `unauthorized`): the token expired without a refresh; the node disconnects. */
export type AuthExpiredEvent = WireError;

export type CallState =
  | 'ringing'
  | 'accepted'
  | 'answered_elsewhere'
  | 'declined'
  | 'busy'
  | 'cancelled'
  | 'missed'
  | 'ended';

/** States after which nothing more happens to a call. */
export const FINAL_CALL_STATES: readonly CallState[] = [
  'answered_elsewhere',
  'declined',
  'busy',
  'cancelled',
  'missed',
  'ended',
];

export interface CallIncomingEvent {
  callId: string;
  from: { user: UserId; name: string };
  media: CallMedia;
  room: RoomName;
}

export interface CallStateEvent {
  callId: string;
  state: CallState;
  /** The user who caused it. */
  by?: UserId;
  /** The session id of the connection that caused it. */
  device?: string;
  reason?: string;
}

// ---- file transfers (protocol.md, "File transfers") ----

/** A transfer's overall state; final: `done`, `cancelled`, `failed`. */
export type FileTransferState = 'offered' | 'accepted' | 'transferring' | 'done' | 'cancelled' | 'failed';
/** One receiver's state within a transfer. */
export type FileReceiverState = FileTransferState | 'rejected';
export const FINAL_FILE_STATES: readonly FileTransferState[] = ['done', 'cancelled', 'failed'];

export interface FileOfferRequest {
  room: RoomName;
  /** A participant id of the room; null or absent: every other participant. */
  to?: ParticipantId | null;
  /** Chosen by the sender: 1–64 of `A–Z a–z 0–9 _ -`, unique on the node. */
  id: string;
  name: string;
  size: number;
  /** `type/subtype`. */
  mime: string;
  /** 64 lowercase hex digits. */
  sha256?: string;
}

export interface FileIdRequest {
  id: string;
}

export interface FileProgressRequest {
  id: string;
  bytes: number;
}

export interface FileProgressResult {
  /** The progress now recorded for the requesting party. */
  bytes: number;
}

export interface FileDoneRequest {
  id: string;
  sha256: string;
}

export interface FileCancelRequest {
  id: string;
  reason?: string;
}

export interface FileRoomRequest {
  room: RoomName;
}

/** The `file:state` payload: a transfer as the node keeps it. */
export interface FileStateEvent {
  id: string;
  room: RoomName;
  /** The sender's participant id. */
  from: ParticipantId;
  /** The participant ids the file was offered to. */
  to: ParticipantId[];
  name: string;
  size: number;
  mime: string;
  sha256: string | null;
  state: FileTransferState;
  /** Confirmed progress: the least over the receivers still in the transfer; never goes backwards. */
  bytes: number;
  /** What the sender reported as sent. */
  sent: number;
  /** Bytes per second over the last seconds. */
  rate: number;
  /** Seconds, or null. */
  eta: number | null;
  via: 'p2p' | 'relay';
  reason?: string;
  /** Where receivers download a relayed file (relative to the node), once uploaded. */
  url?: string;
  receivers: Record<ParticipantId, { state: FileReceiverState; bytes: number }>;
}

export interface FileTransferResult {
  transfer: FileStateEvent;
}

export interface FileSubscribeResult {
  transfers: FileStateEvent[];
}

/** Candidate types of a selected ICE pair. */
export type CandidateType = 'host' | 'srflx' | 'prflx' | 'relay';

/** The echo report: what the worker saw on its side of the connection (protocol.md, "The echo report"). */
export interface EchoReport {
  verdict: 'good' | 'degraded' | 'failed';
  /** Why the verdict is not `good`, in words a user can act on; empty when good. */
  reasons: string[];
  /** Seconds of media observed. */
  duration: number;
  connection: {
    /** The worker's `connectionState` at report time. */
    state: string;
    /** The selected candidate pair's types, from the worker's side; null without a pair. */
    local: CandidateType | null;
    remote: CandidateType | null;
    /** Either side is `relay`. */
    turn: boolean;
    /** `udp` / `tcp`, or null. */
    protocol: string | null;
  };
  /** Round-trip time from RTCP, or null. */
  rttMs: number | null;
  audio: EchoStreamReport | null;
  video: EchoVideoReport | null;
}

export interface EchoStreamReport {
  packets: number;
  packetsLost: number;
  lossPercent: number;
  jitterMs: number;
  bitrateKbps: number;
}

export interface EchoVideoReport extends EchoStreamReport {
  frames: number;
  frameRate: number;
  keyframes: number;
  /** Of the last keyframe; null when none could be read. */
  width: number | null;
  height: number | null;
}

export interface MediaReportEvent {
  room: RoomName;
  job: string;
  report: EchoReport;
}

/**
 * Why a job ended: `released` / `finished` (the other side released it: told to
 * the worker / the requester), `requester_left` (told to the worker),
 * `worker_lost` (the worker disconnected; carries `error.code` `unavailable`).
 */
export type MediaEndReason = 'released' | 'finished' | 'requester_left' | 'worker_lost';

export interface MediaEndedEvent {
  room: RoomName;
  job: string;
  kind: MediaKind;
  reason: MediaEndReason;
  error?: WireError;
}

/** Room events: they carry the room's `seq`. */
export interface RoomEventMap {
  'participant:joined': ParticipantJoinedEvent;
  'participant:left': ParticipantLeftEvent;
  'participant:updated': ParticipantUpdatedEvent;
  'recording:state': RecordingStateEvent;
  'room:mode': RoomModeEvent;
  'room:data': RoomDataEvent;
}
export type RoomEventName = keyof RoomEventMap;
export const ROOM_EVENT_NAMES: readonly RoomEventName[] = [
  'participant:joined',
  'participant:left',
  'participant:updated',
  'recording:state',
  'room:mode',
  'room:data',
];

export interface ServerEvents extends RoomEventMap {
  signal: SignalEvent;
  session: SessionEvent;
  'server:draining': DrainingEvent;
  'auth:expiring': AuthExpiringEvent;
  'auth:expired': AuthExpiredEvent;
  'mute:request': MuteRequestEvent;
  'call:incoming': CallIncomingEvent;
  'call:state': CallStateEvent;
  'file:state': FileStateEvent;
  'media:report': MediaReportEvent;
  'media:ended': MediaEndedEvent;
}
export type ServerEventName = keyof ServerEvents;
export const SERVER_EVENT_NAMES: readonly ServerEventName[] = [
  'participant:joined',
  'participant:left',
  'participant:updated',
  'recording:state',
  'room:mode',
  'room:data',
  'mute:request',
  'signal',
  'session',
  'server:draining',
  'auth:expiring',
  'auth:expired',
  'call:incoming',
  'call:state',
  'file:state',
  'media:report',
  'media:ended',
];
