import {
  Room,
  RtcError,
  SignalingClient,
  SpeakingDetector,
  type Call,
  type CallStateEvent,
  type ConnectionState,
  type MuteRequestEvent,
  type ParticipantState,
  type RemoteParticipant,
  type RoomMode,
} from '../sdk';
import { FilePanel, findFileUi } from './files';
import { openLocalMedia, openScreen, stopStream } from './media';
import type { DemoParams } from './params';
import { RecordingPanel, findRecordingUi } from './recording';
import { RecordingsList, findRecordingsUi } from './recordings';
import { StatsView } from './statsview';
import { LOCAL, TileGrid } from './tiles';
import { MediaTimings } from './timings';
import { fetchDevToken, readClaims, tabUserId } from './token';

/** The page elements the demo drives; all looked up once. */
/** How long after a recording starts or ends the recordings list reloads. */
const RECORDINGS_RELOAD_MS = 2500;

export interface Ui {
  form: HTMLFormElement;
  roomInput: HTMLInputElement;
  nameInput: HTMLInputElement;
  relayInput: HTMLInputElement;
  speakingInput: HTMLInputElement;
  joinButton: HTMLButtonElement;
  status: HTMLElement;
  roomMode: HTMLElement;
  socketStatus: HTMLElement;
  participantCount: HTMLElement;
  error: HTMLElement;
  notice: HTMLElement;
  controls: HTMLElement;
  toggleAudio: HTMLButtonElement;
  toggleVideo: HTMLButtonElement;
  toggleHand: HTMLButtonElement;
  toggleScreen: HTMLButtonElement;
  toggleStats: HTMLButtonElement;
  enableSound: HTMLButtonElement;
  leaveButton: HTMLButtonElement;
  tiles: HTMLElement;
  rtt: HTMLElement;
  incomingCall: HTMLElement;
  incomingText: HTMLElement;
  acceptCall: HTMLButtonElement;
  declineCall: HTMLButtonElement;
  callForm: HTMLFormElement;
  callUserInput: HTMLInputElement;
  callButton: HTMLButtonElement;
  callState: HTMLElement;
  hangupButton: HTMLButtonElement;
  selfUser: HTMLElement;
}

export function findUi(doc: Document = document): Ui {
  const get = <T extends HTMLElement>(id: string, type: new () => T): T => {
    const el = doc.getElementById(id);
    if (!(el instanceof type)) throw new Error(`demo page lacks #${id}`);
    return el;
  };
  return {
    form: get('join-form', HTMLFormElement),
    roomInput: get('room-input', HTMLInputElement),
    nameInput: get('name-input', HTMLInputElement),
    relayInput: get('relay-input', HTMLInputElement),
    speakingInput: get('speaking-input', HTMLInputElement),
    joinButton: get('join-button', HTMLButtonElement),
    status: get('status', HTMLElement),
    roomMode: get('room-mode', HTMLElement),
    socketStatus: get('socket-status', HTMLElement),
    participantCount: get('participant-count', HTMLElement),
    error: get('error', HTMLElement),
    notice: get('notice', HTMLElement),
    controls: get('controls', HTMLElement),
    toggleAudio: get('toggle-audio', HTMLButtonElement),
    toggleVideo: get('toggle-video', HTMLButtonElement),
    toggleHand: get('toggle-hand', HTMLButtonElement),
    toggleScreen: get('toggle-screen', HTMLButtonElement),
    toggleStats: get('toggle-stats', HTMLButtonElement),
    enableSound: get('enable-sound', HTMLButtonElement),
    leaveButton: get('leave-button', HTMLButtonElement),
    tiles: get('tiles', HTMLElement),
    rtt: get('rtt', HTMLElement),
    incomingCall: get('incoming-call', HTMLElement),
    incomingText: get('incoming-text', HTMLElement),
    acceptCall: get('accept-call', HTMLButtonElement),
    declineCall: get('decline-call', HTMLButtonElement),
    callForm: get('call-form', HTMLFormElement),
    callUserInput: get('call-user-input', HTMLInputElement),
    callButton: get('call-button', HTMLButtonElement),
    callState: get('call-state', HTMLElement),
    hangupButton: get('hangup-button', HTMLButtonElement),
    selfUser: get('self-user', HTMLElement),
  };
}

/** What `#status` shows: the room's state, plus the demo's own steps before it. */
export type DemoStatus = 'idle' | 'connecting' | 'joining' | 'joined' | 'rejoining' | 'left' | 'error';

export interface DemoEvent {
  at: number;
  type: string;
  detail: unknown;
}

const NAME_KEY = 'mikoto-rtc:name';
const PING_INTERVAL_MS = 5000;

/**
 * The demo session: one signaling client for the page's lifetime (so calls
 * ring while no room is joined), at most one room, the local media, and the
 * page. Everything a room opens is closed in `leave()`.
 */
export class DemoApp {
  client: SignalingClient | null = null;
  room: Room | null = null;
  /** The last `call:state` per call id, as this tab saw it. */
  readonly calls: Record<string, CallStateEvent> = {};
  /** The call this tab is in (or placing / answering). */
  currentCall: Call | null = null;
  /** The ringing call shown in the banner. */
  private incoming: Call | null = null;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private readonly title = document.title;
  private connecting: Promise<SignalingClient> | null = null;
  camera: MediaStream | null = null;
  /** What is sent: the camera, or the camera's audio with a screen track. */
  outgoing: MediaStream | null = null;
  readonly userId: string;
  /** Recent SDK events, newest last, for tests and debugging. */
  readonly events: DemoEvent[] = [];

  private readonly tiles: TileGrid;
  /** The room's file transfers: drop zone, picker, one row per transfer. */
  readonly files: FilePanel;
  /** The recording indicator and the Start / Stop recording buttons. */
  readonly recording: RecordingPanel;
  /** Recordings to download or delete (tokens with grant `record`). */
  readonly recordings: RecordingsList;
  /** When media first showed up (test hooks). */
  readonly timings = new MediaTimings();
  /** The tiles' quality badges and stats overlays. */
  readonly stats: StatsView;
  /** The token the client last used (the `token` parameter, or the last dev token). */
  private token: string | null;
  private screenTrack: MediaStreamTrack | null = null;
  private speaking: SpeakingDetector | null = null;
  private busy = false;

  constructor(
    private readonly ui: Ui,
    private readonly params: DemoParams,
  ) {
    this.token = params.token;
    // A given token names its user: the page then says who it really is.
    this.userId = tabUserId(params.user ?? readClaims(params.token)?.sub ?? null);
    ui.selfUser.textContent = this.userId;
    this.tiles = new TileGrid(ui.tiles, () => {
      ui.enableSound.hidden = false;
    });
    this.stats = new StatsView(this.tiles, ui.toggleStats, params.stats);
    this.files = new FilePanel(findFileUi(), {
      autoaccept: params.autoaccept,
      log: (type, detail) => this.log(type, detail),
      onError: (err) => this.showError(err),
    });
    this.recording = new RecordingPanel(findRecordingUi(), this);
    this.recordings = new RecordingsList(findRecordingsUi(), this, params.server);
    void this.recordings.refresh().catch(() => undefined);
    ui.roomInput.value = params.room ?? '';
    ui.nameInput.value = params.name ?? sessionStorage.getItem(NAME_KEY) ?? '';
    ui.nameInput.placeholder = `Guest ${this.userId.slice(-4)}`;
    ui.relayInput.checked = params.relay;
    ui.speakingInput.checked = params.speaking;

    ui.form.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.join();
    });
    ui.leaveButton.addEventListener('click', () => void this.leave());
    ui.toggleAudio.addEventListener('click', () => void this.toggleAudio());
    ui.toggleVideo.addEventListener('click', () => void this.toggleVideo());
    ui.toggleHand.addEventListener('click', () => void this.toggleHand());
    ui.toggleScreen.addEventListener('click', () => void this.toggleScreen());
    ui.enableSound.addEventListener('click', () => {
      ui.enableSound.hidden = true;
      this.tiles.playAllAudio();
    });
    ui.callForm.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.placeCall();
    });
    ui.acceptCall.addEventListener('click', () => void this.acceptIncoming());
    ui.declineCall.addEventListener('click', () => void this.declineIncoming());
    ui.hangupButton.addEventListener('click', () => void this.hangup());
    this.setStatus('idle');
    this.setSocketStatus('idle');
    this.showCallState(null);
  }

  recordingChanged(): void {
    // The worker finishes the catalog a moment after the end: reload after that.
    setTimeout(() => void this.recordings.refresh().catch(() => undefined), RECORDINGS_RELOAD_MS);
  }

  /** The token in use (the `token` parameter, or the last dev token). */
  get currentToken(): string | null {
    return this.token;
  }

  /** Whether our token has grant `record` (decoded here only to show the buttons; the node enforces it). */
  get canRecord(): boolean {
    return readClaims(this.token)?.record === true;
  }

  /** The signaling connection's state (`idle` before the first connect). */
  get connectionState(): ConnectionState {
    return this.client?.state ?? 'idle';
  }

  /**
   * The page's signaling client, connected (created on first use, and again
   * after one went down for good). Calls ring on it; rooms join through it.
   */
  async connect(): Promise<SignalingClient> {
    const existing = this.client;
    if (existing && existing.state !== 'disconnected' && existing.state !== 'closed') {
      await existing.connect();
      return existing;
    }
    if (this.connecting) return this.connecting;
    const client = new SignalingClient({
      // A function, so every (re)connect gets a fresh dev token.
      token:
        this.params.token ??
        (async () => {
          const token = await fetchDevToken(this.userId, this.displayName(), this.params.server);
          this.token = token;
          return token;
        }),
      ...(this.params.server ? { url: this.params.server } : {}),
    });
    existing?.close();
    this.client = client;
    this.wireClient(client);
    this.connecting = client
      .connect()
      .then(() => client)
      .finally(() => {
        this.connecting = null;
      });
    return this.connecting;
  }

  /** Drop the transport as a network loss would (the session is resumed). For tests. */
  dropTransport(): void {
    this.client?.dropTransport();
  }

  /** Close the client for good (page going away). */
  shutdown(): void {
    this.stopPing();
    const client = this.client;
    void this.teardown();
    // Synchronously: the page is going away. The server removes our participants at once.
    client?.close();
  }

  /** The peer connection toward each remote participant, by participant id. */
  peers(): Record<string, RTCPeerConnection> {
    return Object.fromEntries(this.room?.peerConnections() ?? []);
  }

  async join(): Promise<void> {
    if (this.busy || this.room) return;
    const ui = this.ui;
    if (!ui.form.reportValidity()) return;
    this.busy = true;
    ui.joinButton.disabled = true;
    this.showError(null);
    this.showNotice(null);
    const roomName = ui.roomInput.value.trim();
    const name = ui.nameInput.value.trim() || ui.nameInput.placeholder;
    sessionStorage.setItem(NAME_KEY, ui.nameInput.value.trim());
    try {
      this.setStatus('connecting');
      const media = await openLocalMedia(this.params);
      this.camera = media.stream;
      this.outgoing = media.stream;
      this.showNotice(media.warning);

      const client = await this.connect();
      const room = new Room(client, { iceTransportPolicy: ui.relayInput.checked ? 'relay' : 'all' });
      this.room = room;
      this.wire(room);
      this.files.attach(room);
      this.recording.attach(room);
      this.timings.attach(room);
      this.stats.attach(room);

      const local = this.tiles.ensure(LOCAL, { id: '', name: `${name} (you)`, local: true });
      local.setStream(this.outgoing);
      await room.setLocalStream(this.outgoing);
      if (ui.speakingInput.checked && this.camera?.getAudioTracks().length) {
        this.speaking = new SpeakingDetector(this.camera, (speaking) => {
          room.updateState({ speaking }).catch(() => undefined);
        });
      }

      this.setStatus('joining');
      const info = await room.join(roomName, { name });
      local.setId(info.self.id);
      this.rememberInUrl(roomName, ui.nameInput.value.trim());
      ui.form.hidden = true;
      ui.controls.hidden = false;
      this.syncControls();
    } catch (err) {
      this.showError(err);
      await this.teardown();
      this.setStatus('error');
    } finally {
      this.busy = false;
      ui.joinButton.disabled = false;
    }
  }

  async leave(): Promise<void> {
    if (!this.room) return;
    await this.teardown();
    this.setStatus('left');
  }

  /** Close everything the room session opened (not the client); safe to call at any point. */
  async teardown(): Promise<void> {
    const room = this.room;
    this.room = null;
    this.files.detach();
    this.recording.detach();
    this.timings.detach();
    this.stats.detach();
    this.showMode(null);
    this.speaking?.close();
    this.speaking = null;
    if (room) await room.close().catch(() => undefined);
    this.screenTrack?.stop();
    this.screenTrack = null;
    stopStream(this.camera);
    this.camera = null;
    this.outgoing = null;
    this.tiles.clear();
    this.ui.form.hidden = false;
    this.ui.controls.hidden = true;
    this.ui.enableSound.hidden = true;
    this.ui.participantCount.textContent = '0';
  }

  async toggleAudio(): Promise<void> {
    const room = this.room;
    if (!room) return;
    await room.setAudioEnabled(!room.localParticipantState.audio).catch((e: unknown) => this.showError(e));
    this.syncControls();
  }

  /** An operator asked us to mute (the admin API): the demo complies, as most apps would. */
  private async muteRequested(request: MuteRequestEvent): Promise<void> {
    this.log('mute:request', request);
    const room = this.room;
    if (!room || room.name !== request.room) return;
    if (request.audio) await room.setAudioEnabled(false).catch((e: unknown) => this.showError(e));
    if (request.video) await room.setVideoEnabled(false).catch((e: unknown) => this.showError(e));
    this.syncControls();
  }

  async toggleVideo(): Promise<void> {
    const room = this.room;
    if (!room) return;
    await room.setVideoEnabled(!room.localParticipantState.video).catch((e: unknown) => this.showError(e));
    this.syncControls();
  }

  async toggleHand(): Promise<void> {
    const room = this.room;
    if (!room) return;
    await room.updateState({ hand: !room.localParticipantState.hand }).catch((e: unknown) => this.showError(e));
    this.syncControls();
  }

  async toggleScreen(): Promise<void> {
    const room = this.room;
    if (!room) return;
    try {
      if (this.screenTrack) {
        await this.stopScreen();
        return;
      }
      const track = await openScreen();
      if (!track) {
        this.showNotice('Screen sharing is not available in this browser.');
        return;
      }
      this.screenTrack = track;
      track.addEventListener('ended', () => void this.stopScreen(), { once: true });
      const audio = this.camera?.getAudioTracks() ?? [];
      await this.send(new MediaStream([...audio, track]));
      await room.updateState({ screen: true });
    } catch (err) {
      if (!(err instanceof DOMException && err.name === 'NotAllowedError')) this.showError(err);
    } finally {
      this.syncControls();
    }
  }

  private async stopScreen(): Promise<void> {
    const track = this.screenTrack;
    if (!track) return;
    this.screenTrack = null;
    track.stop();
    await this.send(this.camera);
    await this.room?.updateState({ screen: false });
    this.syncControls();
  }

  private async send(stream: MediaStream | null): Promise<void> {
    this.outgoing = stream;
    this.tiles.get(LOCAL)?.setStream(stream);
    await this.room?.setLocalStream(stream);
  }

  private wireClient(client: SignalingClient): void {
    client.on('state', ({ state, error, resumed }) => {
      if (this.client !== client) return;
      this.log('socket', { state, error: error?.toJSON(), resumed, session: client.sessionId });
      this.setSocketStatus(state);
      this.tiles.get(LOCAL)?.setPresence(state === 'connected' ? 'connected' : 'reconnecting');
      if (state === 'connected') this.startPing(client);
      else if (state !== 'reconnecting' && state !== 'connecting') this.stopPing();
    });
    client.on('session:lost', ({ error }) => this.log('session:lost', error.toJSON()));
    client.on('server:draining', (e) => this.log('server:draining', e));
    client.on('auth:expiring', (e) => this.log('auth:expiring', e));
    client.on('auth:expired', (e) => this.log('auth:expired', e));
    client.on('mute:request', (e) => void this.muteRequested(e));
    client.on('rtt', ({ rtt }) => this.showRtt(rtt));
    const calls = client.calls;
    calls.on('call:incoming', ({ call }) => {
      this.log('call:incoming', { callId: call.callId, from: call.from, room: call.room });
      this.showIncoming(call);
    });
    calls.on('call:state', ({ call }) => this.onCallState(call));
  }

  private wire(room: Room): void {
    room.on('state', ({ state, error }) => {
      this.log('room', { state, error: error?.toJSON() });
      if (state === 'joined') {
        this.tiles.get(LOCAL)?.setId(room.self?.id ?? '');
        this.setStatus('joined');
      } else if (state === 'rejoining') {
        this.setStatus('rejoining');
      } else if (state === 'joining' && this.ui.status.dataset['state'] === 'rejoining') {
        // Stay on "rejoining" until it worked.
      } else if (state === 'left' && error && this.room === room) {
        this.showError(error);
        void this.teardown().then(() => this.setStatus('error'));
      }
    });
    room.on('participant:joined', ({ participant }) => {
      this.log('participant:joined', { id: participant.id, name: participant.name });
      this.showParticipant(participant);
      this.updateCount();
    });
    room.on('participant:left', ({ participant, reason }) => {
      this.log('participant:left', { id: participant.id, reason });
      this.tiles.remove(participant.id);
      this.updateCount();
    });
    room.on('participant:updated', ({ participant }) => {
      this.log('participant:updated', {
        id: participant.id,
        state: participant.state,
        connection: participant.connection,
      });
      this.showParticipant(participant);
    });
    room.on('self:updated', ({ self, state, connection }) => {
      this.log('self:updated', { id: self.id, state, connection });
    });
    room.on('peer:icerestart', ({ participantId, origin, reason }) => {
      this.log('peer:icerestart', { participantId, origin, reason });
    });
    room.on('track', ({ participantId, track, stream }) => {
      this.log('track', { participantId, kind: track.kind });
      this.tiles.get(participantId)?.setStream(stream);
    });
    room.on('peer:state', ({ participantId, state }) => {
      this.log('peer:state', { participantId, state });
      this.tiles.get(participantId)?.setConnectionState(state);
    });
    room.on('local:state', ({ state }) => {
      this.tiles.get(LOCAL)?.setState(state);
      this.syncControls();
    });
    room.on('mode', ({ mode, previous, worker, moved }) => {
      this.log('mode', { mode, previous, worker, moved });
      this.showMode(mode);
    });
    room.on('forward:connection', ({ worker, pc, state }) => {
      this.log('forward:connection', { worker, pc, state });
    });
  }

  /** "via server" beside the room's status while its media goes through a media worker. */
  private showMode(mode: RoomMode | null): void {
    const el = this.ui.roomMode;
    el.dataset['mode'] = mode ?? 'none';
    el.hidden = mode !== 'forward';
  }

  private showParticipant(participant: RemoteParticipant): void {
    const tile = this.tiles.ensure(participant.id, {
      id: participant.id,
      name: participant.name,
      local: false,
    });
    tile.setName(participant.name || participant.id);
    tile.setState(participant.state);
    tile.setConnectionState(participant.connectionState);
    tile.setPresence(participant.connection);
    if (participant.stream) tile.setStream(participant.stream);
  }

  // ---- calls ----

  /** Ring the user in the call input. */
  async placeCall(): Promise<void> {
    const ui = this.ui;
    if (!ui.callForm.reportValidity()) return;
    const user = ui.callUserInput.value.trim();
    ui.callButton.disabled = true;
    this.showError(null);
    try {
      const client = await this.connect();
      const call = await client.calls.invite(user, { audio: this.params.audio, video: this.params.video });
      this.currentCall = call;
      this.log('call:placed', { callId: call.callId, to: user, room: call.room });
      this.onCallState(call);
    } catch (err) {
      this.showError(err);
    } finally {
      ui.callButton.disabled = false;
    }
  }

  async acceptIncoming(): Promise<void> {
    const call = this.incoming;
    const client = this.client;
    if (!call || !client) return;
    this.hideIncoming();
    try {
      const accepted = await client.calls.accept(call.callId);
      this.currentCall = accepted;
      this.onCallState(accepted);
      await this.joinCallRoom(accepted);
    } catch (err) {
      this.showError(err);
    }
  }

  async declineIncoming(): Promise<void> {
    const call = this.incoming;
    const client = this.client;
    if (!call || !client) return;
    this.hideIncoming();
    await client.calls.decline(call.callId).catch((err: unknown) => this.showError(err));
  }

  /** Cancel the call while it rings, hang up once accepted; leave its room either way. */
  async hangup(): Promise<void> {
    const call = this.currentCall;
    const client = this.client;
    if (!call || !client) return;
    try {
      if (!call.ended) {
        if (call.state === 'ringing' && call.direction === 'outgoing') await client.calls.cancel(call.callId);
        else if (call.state === 'accepted') await client.calls.hangup(call.callId);
      }
    } catch (err) {
      this.showError(err);
    }
    await this.leaveCallRoom(call);
  }

  private onCallState(call: Call): void {
    const event: CallStateEvent = { callId: call.callId, state: call.state };
    if (call.by !== null) event.by = call.by;
    if (call.device !== null) event.device = call.device;
    if (call.reason !== null) event.reason = call.reason;
    this.calls[call.callId] = event;
    this.log('call:state', event);
    if (this.incoming?.callId === call.callId && call.state !== 'ringing') this.hideIncoming();
    const current = this.currentCall;
    // What `#call-state` shows: our call, else the last call this tab heard of.
    if (!current || current.callId === call.callId || current.ended) this.showCallState(call);
    if (current?.callId !== call.callId) return;
    if (call.state === 'accepted' && call.direction === 'outgoing') {
      void this.joinCallRoom(call).catch((err: unknown) => this.showError(err));
    } else if (call.ended) {
      void this.leaveCallRoom(call);
    }
  }

  private async joinCallRoom(call: Call): Promise<void> {
    if (!call.room) return;
    if (this.room?.name === call.room) return;
    if (this.room) await this.leave();
    this.ui.roomInput.value = call.room;
    await this.join();
  }

  private async leaveCallRoom(call: Call): Promise<void> {
    if (this.currentCall?.callId === call.callId && call.ended) this.ui.hangupButton.hidden = true;
    if (call.room && this.room?.name === call.room) await this.leave();
    if (this.currentCall?.callId === call.callId) {
      this.ui.hangupButton.hidden = true;
    }
  }

  private showIncoming(call: Call): void {
    if (call.ended || call.state !== 'ringing') return;
    this.incoming = call;
    const ui = this.ui;
    const from = call.from ? call.from.name || call.from.user : 'someone';
    const kind = call.media?.video ? 'video' : 'audio';
    ui.incomingText.textContent = `${from} is calling (${kind})…`;
    ui.incomingCall.dataset['callId'] = call.callId;
    ui.incomingCall.classList.add('ringing');
    ui.incomingCall.hidden = false;
    document.title = `Incoming call: ${from}`;
    if (!this.currentCall || this.currentCall.ended) this.showCallState(call);
  }

  private hideIncoming(): void {
    this.incoming = null;
    const el = this.ui.incomingCall;
    el.hidden = true;
    el.classList.remove('ringing');
    delete el.dataset['callId'];
    document.title = this.title;
  }

  private showCallState(call: Call | null): void {
    const el = this.ui.callState;
    const state = call?.state ?? 'none';
    el.textContent = call?.reason ? `${state} (${call.reason})` : state;
    el.dataset['state'] = state;
    if (call) el.dataset['callId'] = call.callId;
    else delete el.dataset['callId'];
    const mine = call !== null && this.currentCall?.callId === call.callId;
    this.ui.hangupButton.hidden = !(mine && !call.ended);
    this.ui.hangupButton.textContent = call?.state === 'ringing' ? 'Cancel' : 'Hang up';
  }

  // ---- RTT ----

  private startPing(client: SignalingClient): void {
    if (this.pingTimer !== null) return;
    const ping = (): void => {
      if (this.client !== client || !client.connected) return;
      client.ping().catch(() => undefined);
    };
    ping();
    this.pingTimer = setInterval(ping, PING_INTERVAL_MS);
  }

  private stopPing(): void {
    if (this.pingTimer !== null) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  private showRtt(rtt: number): void {
    this.ui.rtt.textContent = `${Math.round(rtt)} ms`;
    this.ui.rtt.dataset['rtt'] = String(Math.round(rtt));
  }

  displayName(): string {
    return this.ui.nameInput.value.trim() || this.ui.nameInput.placeholder;
  }

  private syncControls(): void {
    const state: Readonly<ParticipantState> | undefined = this.room?.localParticipantState;
    const ui = this.ui;
    const hasAudio = (this.outgoing?.getAudioTracks().length ?? 0) > 0;
    const hasVideo = (this.outgoing?.getVideoTracks().length ?? 0) > 0;
    ui.toggleAudio.disabled = !hasAudio;
    ui.toggleVideo.disabled = !hasVideo;
    ui.toggleAudio.setAttribute('aria-pressed', String(!!state?.audio));
    ui.toggleAudio.textContent = state?.audio ? 'Mute mic' : 'Unmute mic';
    ui.toggleVideo.setAttribute('aria-pressed', String(!!state?.video));
    ui.toggleVideo.textContent = state?.video ? 'Stop camera' : 'Start camera';
    ui.toggleHand.setAttribute('aria-pressed', String(!!state?.hand));
    ui.toggleHand.textContent = state?.hand ? 'Lower hand' : 'Raise hand';
    ui.toggleScreen.setAttribute('aria-pressed', String(this.screenTrack !== null));
    ui.toggleScreen.textContent = this.screenTrack ? 'Stop sharing' : 'Share screen';
  }

  private updateCount(): void {
    const others = this.room?.participants.size ?? 0;
    this.ui.participantCount.textContent = String(this.room ? others + 1 : 0);
  }

  private setStatus(status: DemoStatus): void {
    this.ui.status.textContent = status;
    this.ui.status.dataset['state'] = status;
    document.body.dataset['status'] = status;
    this.log('status', status);
  }

  private setSocketStatus(state: string): void {
    this.ui.socketStatus.textContent = state;
    this.ui.socketStatus.dataset['state'] = state;
  }

  showError(err: unknown): void {
    const el = this.ui.error;
    if (err === null || err === undefined) {
      el.hidden = true;
      el.textContent = '';
      delete el.dataset['code'];
      return;
    }
    const error =
      err instanceof RtcError
        ? err
        : new RtcError('internal', err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    el.textContent = `${error.code}: ${error.message}`;
    el.dataset['code'] = error.code;
    el.hidden = false;
    this.log('error', error.toJSON());
  }

  showNotice(text: string | null): void {
    this.ui.notice.textContent = text ?? '';
    this.ui.notice.hidden = !text;
  }

  private rememberInUrl(room: string, name: string): void {
    const url = new URL(window.location.href);
    url.searchParams.set('room', room);
    if (name) url.searchParams.set('name', name);
    else url.searchParams.delete('name');
    history.replaceState(null, '', url);
  }

  log(type: string, detail: unknown): void {
    this.events.push({ at: Date.now(), type, detail });
    if (this.events.length > 500) this.events.splice(0, this.events.length - 500);
  }
}
