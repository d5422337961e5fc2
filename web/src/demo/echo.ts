import {
  Room,
  RtcError,
  type EchoReport,
  type EchoStreamReport,
  type EchoTest,
  type EchoVideoReport,
  type SignalingClient,
} from '../sdk';
import { openLocalMedia, stopStream } from './media';
import type { DemoParams } from './params';

/** The "Test my camera, mic and network" panel's elements. */
export interface EchoUi {
  panel: HTMLElement;
  state: HTMLElement;
  localVideo: HTMLVideoElement;
  remoteVideo: HTMLVideoElement;
  start: HTMLButtonElement;
  stop: HTMLButtonElement;
  hear: HTMLInputElement;
  result: HTMLElement;
  verdict: HTMLElement;
  reasons: HTMLUListElement;
  numbers: HTMLTableSectionElement;
}

export function findEchoUi(doc: Document = document): EchoUi {
  const get = <T extends HTMLElement>(id: string, type: new () => T): T => {
    const el = doc.getElementById(id);
    if (!(el instanceof type)) throw new Error(`demo page lacks #${id}`);
    return el;
  };
  return {
    panel: get('echo', HTMLElement),
    state: get('echo-state', HTMLElement),
    localVideo: get('echo-local', HTMLVideoElement),
    remoteVideo: get('echo-remote', HTMLVideoElement),
    start: get('echo-start', HTMLButtonElement),
    stop: get('echo-stop', HTMLButtonElement),
    hear: get('echo-hear', HTMLInputElement),
    result: get('echo-result', HTMLElement),
    verdict: get('echo-verdict', HTMLElement),
    reasons: get('echo-reasons', HTMLUListElement),
    numbers: get('echo-numbers', HTMLTableSectionElement),
  };
}

/** What the panel needs from the page: the shared client, error display and event log. */
export interface EchoHost {
  readonly userId: string;
  connect(): Promise<SignalingClient>;
  displayName(): string;
  showError(err: unknown): void;
  showNotice(text: string | null): void;
  log(type: string, detail: unknown): void;
}

/**
 * `#echo-state`: `idle`; `starting` (camera, joining a private room, asking for
 * a worker); `connecting` (offering to the worker); `running` (measuring);
 * `reported` (the report is shown; the echo may go on until Stop); `stopped`
 * (ended before a report, without an error); `error` (see `#error`).
 */
export type EchoPanelState = 'idle' | 'starting' | 'connecting' | 'running' | 'reported' | 'stopped' | 'error';

const VERDICT_TEXT: Record<EchoReport['verdict'], string> = {
  good: 'Good: you are ready for calls',
  degraded: 'Degraded: calls will work, with problems',
  failed: 'Failed: calls will not work',
};

/**
 * The echo test page: our camera and microphone go to a media worker, which
 * sends them straight back and then reports what it saw. It joins a room of
 * its own (`room=` or a private one), so nobody else sees the test.
 */
export class EchoPanel {
  state: EchoPanelState = 'idle';
  /** The SDK's handle of the last test (it stays after the test ended). */
  test: EchoTest | null = null;
  /** The test this page is running, until it ends or is stopped. */
  private current: EchoTest | null = null;
  report: EchoReport | null = null;
  error: RtcError | null = null;
  private room: Room | null = null;
  private stream: MediaStream | null = null;
  private busy = false;
  /** Bumped by every start and stop: a step of an older run finds it changed and gives up. */
  private run = 0;

  constructor(
    private readonly ui: EchoUi,
    private readonly host: EchoHost,
    private readonly params: DemoParams,
  ) {
    ui.start.addEventListener('click', () => void this.start());
    ui.stop.addEventListener('click', () => void this.stop());
    ui.hear.addEventListener('change', () => {
      ui.remoteVideo.muted = !ui.hear.checked;
      if (ui.hear.checked) void ui.remoteVideo.play().catch(() => undefined);
    });
    this.setState('idle');
  }

  /** The room the running test joined (null when none runs). */
  get echoRoom(): Room | null {
    return this.room;
  }

  show(): void {
    this.ui.panel.hidden = false;
  }

  /** Run a test: camera and microphone, a private room, a worker, then the report. */
  async start(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    this.ui.start.disabled = true;
    await this.cleanup();
    const run = ++this.run;
    try {
      this.host.showError(null);
      this.error = null;
      this.report = null;
      this.renderReport(null);
      this.setState('starting');
      this.ui.stop.hidden = false;

      const media = await openLocalMedia(this.params);
      if (run !== this.run) return stopStream(media.stream);
      this.stream = media.stream;
      this.ui.localVideo.srcObject = media.stream;
      this.host.showNotice(media.warning);

      const client = await this.host.connect();
      if (run !== this.run) return;
      const room = new Room(client, { iceTransportPolicy: this.params.relay ? 'relay' : 'all', rejoin: false });
      this.room = room;
      room.on('state', ({ state, error }) => {
        if (state === 'left' && error && this.room === room) this.fail(error);
      });
      await room.join(this.params.room ?? privateRoom(this.host.userId), { name: this.host.displayName() });
      if (run !== this.run) return;

      const test = await room.echoTest({
        stream: this.stream,
        ...(this.params.duration !== null ? { duration: this.params.duration } : {}),
      });
      if (run !== this.run) {
        await test.stop();
        return;
      }
      this.test = test;
      this.current = test;
      this.host.log('echo:job', { job: test.job, worker: test.worker });
      this.setState('connecting');
      this.ui.remoteVideo.srcObject = test.stream;
      test.on('state', ({ state }) => {
        if (state === 'running' && this.state === 'connecting') this.setState('running');
      });
      test.on('connectionstatechange', ({ state }) => this.host.log('echo:peer', { state }));
      test.on('report', ({ report }) => {
        this.host.log('echo:report', report);
        this.report = report;
        this.renderReport(report);
        this.setState('reported');
      });
      test.on('ended', ({ reason, error }) => {
        this.host.log('echo:ended', { reason, error: error?.toJSON() ?? null });
        if (this.current !== test) return;
        if (error) this.fail(error);
        else if (this.state !== 'reported') this.setState('stopped');
        void this.cleanup();
      });
    } catch (err) {
      if (run !== this.run) return; // stopped meanwhile: whatever failed was being closed
      this.fail(err);
      await this.cleanup();
    } finally {
      this.busy = false;
      this.ui.start.disabled = false;
    }
  }

  /** Stop the test (releasing the worker) and the camera; the report stays shown. */
  async stop(): Promise<void> {
    this.run++;
    if (this.state !== 'reported' && this.state !== 'error' && this.state !== 'idle') this.setState('stopped');
    await this.cleanup();
  }

  /** Close what a run opened. Safe at any point. */
  async cleanup(): Promise<void> {
    const test = this.current;
    const room = this.room;
    const stream = this.stream;
    this.current = null;
    this.room = null;
    this.stream = null;
    this.ui.stop.hidden = true;
    await test?.stop();
    if (room) await room.close().catch(() => undefined);
    stopStream(stream);
    this.ui.localVideo.srcObject = null;
    this.ui.remoteVideo.srcObject = null;
  }

  private fail(err: unknown): void {
    const error =
      err instanceof RtcError
        ? err
        : new RtcError('internal', err instanceof Error ? `${err.name}: ${err.message}` : String(err));
    this.error = error;
    this.host.showError(error);
    this.setState('error');
  }

  private setState(state: EchoPanelState): void {
    this.state = state;
    const text: Record<EchoPanelState, string> = {
      idle: 'not started',
      starting: 'starting…',
      connecting: 'connecting to the test server…',
      running: this.params.duration !== null ? `measuring (${this.params.duration} s)…` : 'measuring…',
      reported: 'done',
      stopped: 'stopped',
      error: 'error',
    };
    this.ui.state.textContent = text[state];
    this.ui.state.dataset['state'] = state;
    this.ui.start.textContent = state === 'idle' ? 'Start test' : 'Run again';
    this.host.log('echo:state', state);
  }

  private renderReport(report: EchoReport | null): void {
    const ui = this.ui;
    ui.result.hidden = report === null;
    ui.reasons.replaceChildren();
    ui.numbers.replaceChildren();
    if (!report) {
      ui.verdict.textContent = '';
      delete ui.verdict.dataset['verdict'];
      return;
    }
    ui.verdict.textContent = VERDICT_TEXT[report.verdict] ?? report.verdict;
    ui.verdict.dataset['verdict'] = report.verdict;
    for (const reason of report.reasons) {
      const li = document.createElement('li');
      li.textContent = reason;
      ui.reasons.append(li);
    }
    const c = report.connection;
    const rows: [string, string, string][] = [
      ['connection', 'Connection', c.state],
      ['candidates', 'Network path (test server side)', `${c.local ?? '–'} ↔ ${c.remote ?? '–'}${c.protocol ? ` over ${c.protocol.toUpperCase()}` : ''}`],
      ['turn', 'TURN relay used', c.turn ? 'yes' : 'no'],
      ['rtt', 'Round-trip time', report.rttMs === null ? '–' : `${report.rttMs} ms`],
      ['duration', 'Measured for', `${report.duration} s`],
      ...streamRows('audio', 'Audio', report.audio),
      ...streamRows('video', 'Video', report.video),
      ...videoRows(report.video),
    ];
    for (const [field, label, value] of rows) {
      const tr = document.createElement('tr');
      tr.dataset['field'] = field;
      const th = document.createElement('th');
      th.scope = 'row';
      th.textContent = label;
      const td = document.createElement('td');
      td.textContent = value;
      tr.append(th, td);
      ui.numbers.append(tr);
    }
  }
}

function streamRows(key: string, label: string, s: EchoStreamReport | null): [string, string, string][] {
  if (!s) return [[key, label, 'nothing arrived']];
  return [
    [`${key}.packets`, `${label} packets`, `${s.packets} received, ${s.packetsLost} lost (${s.lossPercent} %)`],
    [`${key}.jitterMs`, `${label} jitter`, `${s.jitterMs} ms`],
    [`${key}.bitrateKbps`, `${label} bitrate`, `${s.bitrateKbps} kbit/s`],
  ];
}

function videoRows(v: EchoVideoReport | null): [string, string, string][] {
  if (!v) return [];
  const size = v.width !== null && v.height !== null ? `${v.width} × ${v.height}` : 'unknown';
  return [
    ['video.frameRate', 'Frame rate', `${v.frameRate} frames/s (${v.frames} frames)`],
    ['video.resolution', 'Resolution', size],
    ['video.keyframes', 'Keyframes', String(v.keyframes)],
  ];
}

/** A room only this tab uses: the test is nobody else's business. */
function privateRoom(userId: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(4));
  const suffix = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `echo-${userId}-${suffix}`.replace(/[^A-Za-z0-9._:@-]/g, '-').slice(0, 128);
}
