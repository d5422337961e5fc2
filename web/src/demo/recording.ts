import { RtcError, type ActiveRecording, type RecordingInfo, type Room, type Unsubscribe } from '../sdk';

/** The recording indicator and buttons. */
export interface RecordingUi {
  badge: HTMLElement;
  elapsed: HTMLElement;
  by: HTMLElement;
  start: HTMLButtonElement;
  stop: HTMLButtonElement;
}

export function findRecordingUi(doc: Document = document): RecordingUi {
  const get = <T extends HTMLElement>(id: string, type: new () => T): T => {
    const el = doc.getElementById(id);
    if (!(el instanceof type)) throw new Error(`demo page lacks #${id}`);
    return el;
  };
  return {
    badge: get('recording', HTMLElement),
    elapsed: get('recording-elapsed', HTMLElement),
    by: get('recording-by', HTMLElement),
    start: get('record-start', HTMLButtonElement),
    stop: get('record-stop', HTMLButtonElement),
  };
}

/** What the panel needs from the page. */
export interface RecordingHost {
  /** Whether our token has grant `record` (read from its payload: only to show the buttons). */
  readonly canRecord: boolean;
  showError(err: unknown): void;
  showNotice(text: string | null): void;
  log(type: string, detail: unknown): void;
  /** A recording of the room started or ended (the recordings list reloads). */
  recordingChanged(): void;
}

const END_TEXT: Record<string, string> = {
  stopped: 'Recording stopped',
  room_empty: 'Recording ended: everyone left',
  worker_lost: 'Recording ended: the recording server was lost',
};

/**
 * The room's recording as everyone in it sees it: a red "● REC" badge with the
 * elapsed time and who started it, while the room is recorded (the SDK sends
 * our media to the recorder by itself); Start / Stop recording buttons when
 * our token has grant `record` (the node checks it again).
 */
export class RecordingPanel {
  private room: Room | null = null;
  private unsubscribes: Unsubscribe[] = [];
  private timer: ReturnType<typeof setInterval> | null = null;
  private busy = false;

  constructor(
    private readonly ui: RecordingUi,
    private readonly host: RecordingHost,
  ) {
    ui.start.addEventListener('click', () => void this.start().catch(() => undefined));
    ui.stop.addEventListener('click', () => void this.stop().catch(() => undefined));
    this.render();
  }

  /** The room's recording (null: not recorded, or not in a room). */
  get recording(): Readonly<ActiveRecording> | null {
    return this.room?.recording ?? null;
  }

  attach(room: Room): void {
    this.detach();
    this.room = room;
    this.unsubscribes = [
      room.on('recording:state', ({ recording, state }) => this.onState(recording, state)),
      room.on('recording:connection', ({ worker, state }) => {
        this.host.log('recording:connection', { worker, state });
        this.ui.badge.dataset['upstream'] = state;
      }),
      room.on('state', () => this.render()),
    ];
    this.render();
  }

  detach(): void {
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    this.unsubscribes = [];
    this.room = null;
    this.render();
  }

  /** What "Start recording" does; rejects with the `RtcError` it shows. */
  async start(): Promise<void> {
    await this.act((room) => room.startRecording());
  }

  /** What "Stop recording" does. */
  async stop(): Promise<void> {
    await this.act((room) => room.stopRecording());
  }

  private async act(action: (room: Room) => Promise<unknown>): Promise<void> {
    const room = this.room;
    if (!room) throw new RtcError('not_found', 'not in a room');
    if (this.busy) throw new RtcError('conflict', 'a recording request is under way');
    this.busy = true;
    this.render();
    this.host.showError(null);
    try {
      await action(room);
    } catch (err) {
      this.host.showError(err);
      throw err;
    } finally {
      this.busy = false;
      this.render();
    }
  }

  private onState(recording: Readonly<ActiveRecording> | null, state: Readonly<RecordingInfo> | null): void {
    this.host.log('recording:state', state ?? { recording: null, active: false, reason: 'left' });
    if (state) this.host.recordingChanged();
    if (state && !state.active) {
      const by = state.by ? ` by ${this.nameOf(state.by)}` : '';
      const error = state.error ? ` (${state.error.code})` : '';
      this.host.showNotice(`${END_TEXT[state.reason] ?? 'Recording ended'}${state.reason === 'stopped' ? by : ''}${error}.`);
    } else if (state?.active && recording) {
      this.host.showNotice(null);
    }
    this.render();
  }

  private render(): void {
    const { badge, start, stop } = this.ui;
    const recording = this.recording;
    const joined = this.room?.state === 'joined';
    badge.hidden = recording === null;
    badge.dataset['state'] = recording ? 'recording' : 'off';
    document.body.dataset['recording'] = String(recording !== null);
    if (recording) {
      badge.dataset['recordingId'] = recording.recording;
      badge.dataset['by'] = recording.by;
      badge.dataset['startedAt'] = String(recording.startedAt);
      badge.dataset['worker'] = recording.worker;
      this.ui.by.textContent = `started by ${this.nameOf(recording.by)}`;
      badge.title = `This room is being recorded (recording ${recording.recording})`;
      this.startTimer();
    } else {
      for (const key of ['recordingId', 'by', 'startedAt', 'worker', 'upstream', 'elapsed']) delete badge.dataset[key];
      this.ui.by.textContent = '';
      this.stopTimer();
    }
    const can = this.host.canRecord && joined;
    start.hidden = !can || recording !== null;
    stop.hidden = !can || recording === null;
    start.disabled = stop.disabled = this.busy;
  }

  /** A user id as people know it: "you", a participant's display name, else the id. */
  private nameOf(user: string): string {
    const room = this.room;
    if (!room) return user;
    if (room.self?.user === user) return 'you';
    for (const participant of room.participants.values()) {
      if (participant.user === user && participant.name) return participant.name;
    }
    return user;
  }

  private startTimer(): void {
    this.tick();
    if (this.timer === null) this.timer = setInterval(() => this.tick(), 1000);
  }

  private stopTimer(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.ui.elapsed.textContent = '';
  }

  private tick(): void {
    const recording = this.recording;
    if (!recording) return;
    // `startedAt` is the node's clock; a page clock behind it shows 0:00 for a while, never less.
    const seconds = Math.max(0, Math.floor((Date.now() - recording.startedAt) / 1000));
    this.ui.elapsed.textContent = clock(seconds);
    this.ui.badge.dataset['elapsed'] = String(seconds);
  }
}

function clock(total: number): string {
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}
