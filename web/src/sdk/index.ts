/**
 * mikoto-rtc browser SDK: a signaling client, one peer connection per remote
 * participant, and the room that ties them together. Framework-free; UI layers
 * build on this module only.
 */
export { SignalingClient, randomId } from './client';
export type {
  ClientEvents,
  ClientOptions,
  ConnectionState,
  ConnectionStateChange,
  RequestOptions,
  TokenSource,
} from './client';
export { Calls } from './calls';
export type { Call, CallDirection, CallsEvents } from './calls';
export { RtcError, isRtcError, isServerErrorCode } from './errors';
export { Emitter } from './events';
export type { Listener, Unsubscribe } from './events';
export { consoleLogger } from './log';
export type { Logger } from './log';
export { Peer, toWireCandidate } from './peer';
export type { PeerConnectionState, PeerEvents, PeerMessage, PeerOptions, PeerRole } from './peer';
export { Room } from './room';
export type {
  JoinInfo,
  JoinOptions,
  RemoteParticipant,
  RemovalReason,
  RoomEvents,
  RoomOptions,
  RoomState,
} from './room';
export { SpeakingDetector } from './speaking';
export type { SpeakingOptions } from './speaking';
export * from './types';
