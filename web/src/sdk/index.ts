/**
 * mikoto-rtc browser SDK: a signaling client, one peer connection per remote
 * participant (or, in a forwarded room, two with a media worker), and the room
 * that ties them together. Framework-free; UI layers build on this module only.
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
export { EchoTest } from './echo';
export type { EchoEndReason, EchoTestEvents, EchoTestOptions, EchoTestState } from './echo';
export { RtcError, isRtcError, isServerErrorCode } from './errors';
export { Emitter } from './events';
export {
  DEFAULT_P2P_TIMEOUT_MS,
  FILE_BUFFER_HIGH_BYTES,
  FILE_CHANNEL_PREFIX,
  FILE_CHUNK_BYTES,
  FILE_PROGRESS_INTERVAL_MS,
  FileStates,
  FileTransfer,
  IncomingTransfer,
  OutgoingTransfer,
  RoomFiles,
  isFinalFileState,
  mergeFileState,
  randomFileId,
  safeFileName,
  safeMime,
} from './files';
export type {
  ChannelRun,
  FileDirection,
  FileLocalState,
  FileProgress,
  FileStatesEvents,
  FileTransferEvents,
  RoomFilesEvents,
  SendFileOptions,
} from './files';
export { ForwardedMedia } from './forward';
export type { ForwardPc, ForwardedMediaEvents } from './forward';
export { Sha256, sha256Hex } from './sha256';
export type { Listener, Unsubscribe } from './events';
export { consoleLogger } from './log';
export type { Logger } from './log';
export { Peer, toWireCandidate } from './peer';
export type { PeerConnectionState, PeerEvents, PeerMessage, PeerOptions, PeerRole } from './peer';
export { RecordingUpstream } from './recording';
export type { RecordingUpstreamEvents } from './recording';
export { MediaUpstream } from './upstream';
export type { MediaUpstreamEvents } from './upstream';
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
