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

/** Codes only the client produces: no answer in time, or no connection to send on. */
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

export interface WireParticipant extends SelfInfo {
  state: ParticipantState;
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
}

export interface LeaveRequest {
  room: RoomName;
}

export type SignalRequest =
  | { room: RoomName; to: ParticipantId; description: WireDescription }
  | { room: RoomName; to: ParticipantId; candidate: WireCandidate | null };

export interface UpdateRequest {
  room: RoomName;
  state: Partial<ParticipantState>;
}

export interface UpdateResult {
  seq: number;
}

/** Request payload and ack result of each client -> server event. */
export interface Requests {
  'room:join': [JoinRequest, JoinResult];
  'room:leave': [LeaveRequest, object];
  signal: [SignalRequest, object];
  'participant:update': [UpdateRequest, UpdateResult];
}
export type RequestName = keyof Requests;

// ---- server -> client events ----

export interface ParticipantJoinedEvent {
  room: RoomName;
  seq: number;
  participant: WireParticipant;
  polite: boolean;
}

export type LeaveReason = 'leave' | 'disconnect';

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

export type SignalEvent =
  | { room: RoomName; from: ParticipantId; description: WireDescription }
  | { room: RoomName; from: ParticipantId; candidate: WireCandidate | null };

export interface ServerEvents {
  'participant:joined': ParticipantJoinedEvent;
  'participant:left': ParticipantLeftEvent;
  'participant:updated': ParticipantUpdatedEvent;
  signal: SignalEvent;
}
export type ServerEventName = keyof ServerEvents;
export const SERVER_EVENT_NAMES: readonly ServerEventName[] = [
  'participant:joined',
  'participant:left',
  'participant:updated',
  'signal',
];
