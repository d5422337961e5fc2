import {
  Room,
  RtcError,
  SignalingClient,
  SpeakingDetector,
  type ParticipantState,
  type RemoteParticipant,
} from '../sdk';
import { openLocalMedia, openScreen, stopStream } from './media';
import type { DemoParams } from './params';
import { TileGrid } from './tiles';
import { fetchDevToken, tabUserId } from './token';

/** The page elements the demo drives; all looked up once. */
export interface Ui {
  form: HTMLFormElement;
  roomInput: HTMLInputElement;
  nameInput: HTMLInputElement;
  relayInput: HTMLInputElement;
  speakingInput: HTMLInputElement;
  joinButton: HTMLButtonElement;
  status: HTMLElement;
  socketStatus: HTMLElement;
  participantCount: HTMLElement;
  error: HTMLElement;
  notice: HTMLElement;
  controls: HTMLElement;
  toggleAudio: HTMLButtonElement;
  toggleVideo: HTMLButtonElement;
  toggleHand: HTMLButtonElement;
  toggleScreen: HTMLButtonElement;
  enableSound: HTMLButtonElement;
  leaveButton: HTMLButtonElement;
  tiles: HTMLElement;
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
    socketStatus: get('socket-status', HTMLElement),
    participantCount: get('participant-count', HTMLElement),
    error: get('error', HTMLElement),
    notice: get('notice', HTMLElement),
    controls: get('controls', HTMLElement),
    toggleAudio: get('toggle-audio', HTMLButtonElement),
    toggleVideo: get('toggle-video', HTMLButtonElement),
    toggleHand: get('toggle-hand', HTMLButtonElement),
    toggleScreen: get('toggle-screen', HTMLButtonElement),
    enableSound: get('enable-sound', HTMLButtonElement),
    leaveButton: get('leave-button', HTMLButtonElement),
    tiles: get('tiles', HTMLElement),
  };
}

/** What `#status` shows: the room's state, plus the demo's own steps before it. */
export type DemoStatus = 'idle' | 'connecting' | 'joining' | 'joined' | 'rejoining' | 'left' | 'error';

export interface DemoEvent {
  at: number;
  type: string;
  detail: unknown;
}

const LOCAL = 'local';
const NAME_KEY = 'mikoto-rtc:name';

/**
 * The demo session: one client, one room, the local media, and the page.
 * Everything it opens it closes in `leave()`.
 */
export class DemoApp {
  client: SignalingClient | null = null;
  room: Room | null = null;
  camera: MediaStream | null = null;
  /** What is sent: the camera, or the camera's audio with a screen track. */
  outgoing: MediaStream | null = null;
  readonly userId = tabUserId();
  /** Recent SDK events, newest last, for tests and debugging. */
  readonly events: DemoEvent[] = [];

  private readonly tiles: TileGrid;
  private screenTrack: MediaStreamTrack | null = null;
  private speaking: SpeakingDetector | null = null;
  private busy = false;

  constructor(
    private readonly ui: Ui,
    private readonly params: DemoParams,
  ) {
    this.tiles = new TileGrid(ui.tiles, () => {
      ui.enableSound.hidden = false;
    });
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
    this.setStatus('idle');
    this.setSocketStatus('idle');
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
      const media = await openLocalMedia({ audio: this.params.audio, video: this.params.video });
      this.camera = media.stream;
      this.outgoing = media.stream;
      this.showNotice(media.warning);

      const token = this.params.token;
      const client = new SignalingClient({
        // A function, so a reconnect gets a fresh dev token.
        token: token ?? (() => fetchDevToken(this.userId, name, this.params.server)),
        ...(this.params.server ? { url: this.params.server } : {}),
      });
      const room = new Room(client, { iceTransportPolicy: ui.relayInput.checked ? 'relay' : 'all' });
      this.client = client;
      this.room = room;
      this.wire(client, room);

      const local = this.tiles.ensure(LOCAL, { id: '', name: `${name} (you)`, local: true });
      local.setStream(this.outgoing);
      await room.setLocalStream(this.outgoing);
      if (ui.speakingInput.checked && this.camera?.getAudioTracks().length) {
        this.speaking = new SpeakingDetector(this.camera, (speaking) => {
          room.updateState({ speaking }).catch(() => undefined);
        });
      }

      await client.connect();
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

  /** Close everything this session opened; safe to call at any point. */
  async teardown(): Promise<void> {
    const { room, client } = this;
    this.room = null;
    this.client = null;
    this.speaking?.close();
    this.speaking = null;
    if (room) await room.close().catch(() => undefined);
    client?.close();
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
    this.setSocketStatus('closed');
  }

  async toggleAudio(): Promise<void> {
    const room = this.room;
    if (!room) return;
    await room.setAudioEnabled(!room.localParticipantState.audio).catch((e: unknown) => this.showError(e));
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

  private wire(client: SignalingClient, room: Room): void {
    client.on('state', ({ state, error }) => {
      this.log('socket', { state, error: error?.toJSON() });
      this.setSocketStatus(state);
    });
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
      this.log('participant:updated', { id: participant.id, state: participant.state });
      this.showParticipant(participant);
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
    if (participant.stream) tile.setStream(participant.stream);
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

  private showError(err: unknown): void {
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

  private showNotice(text: string | null): void {
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

  private log(type: string, detail: unknown): void {
    this.events.push({ at: Date.now(), type, detail });
    if (this.events.length > 500) this.events.splice(0, this.events.length - 500);
  }
}
