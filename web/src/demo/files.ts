import {
  IncomingTransfer,
  OutgoingTransfer,
  RtcError,
  type ChannelRun,
  type FileLocalState,
  type FileTransfer,
  type Room,
  type SendFileOptions,
  type Unsubscribe,
} from '../sdk';

/** What the demo last saw of one transfer (`window.mikotoDemo.files[id]`). */
export interface FileRecord {
  id: string;
  direction: 'outgoing' | 'incoming';
  name: string;
  size: number;
  mime: string;
  state: FileLocalState;
  /** Outgoing: confirmed by the receivers; incoming: held here. */
  bytes: number;
  sent: number;
  rate: number;
  eta: number | null;
  via: 'p2p' | 'relay';
  /** The hash the sender announced. */
  sha256: string | null;
  /** Incoming: the hash of what arrived. */
  receivedSha256: string | null;
  /** Outgoing: bytes put on data channels, resends included. */
  bytesSent: number;
  /** Outgoing: one entry per data channel session (resume offset, bytes sent on it). */
  runs: ChannelRun[];
  /** Incoming: data channels the sender opened. */
  channels: number;
  reason: string | null;
  from: string | null;
  to: string[];
}

export interface FilePanelUi {
  panel: HTMLElement;
  drop: HTMLElement;
  pick: HTMLButtonElement;
  input: HTMLInputElement;
  relay: HTMLInputElement;
  list: HTMLElement;
}

export function findFileUi(doc: Document = document): FilePanelUi {
  const get = <T extends HTMLElement>(id: string, type: new () => T): T => {
    const el = doc.getElementById(id);
    if (!(el instanceof type)) throw new Error(`demo page lacks #${id}`);
    return el;
  };
  return {
    panel: get('files', HTMLElement),
    drop: get('file-drop', HTMLElement),
    pick: get('file-pick', HTMLButtonElement),
    input: get('file-input', HTMLInputElement),
    relay: get('file-relay-input', HTMLInputElement),
    list: get('file-list', HTMLElement),
  };
}

/** One transfer's row: name, size, progress bar, speed, ETA, state, buttons, download link. */
class FileRow {
  readonly element: HTMLLIElement;
  private readonly progress: HTMLProgressElement;
  private readonly stateEl: HTMLElement;
  private readonly rateEl: HTMLElement;
  private readonly etaEl: HTMLElement;
  private readonly bytesEl: HTMLElement;
  private readonly actions: HTMLElement;
  private readonly accept: HTMLButtonElement | null;
  private readonly reject: HTMLButtonElement | null;
  private readonly cancel: HTMLButtonElement;
  private link: HTMLAnchorElement | null = null;
  private objectUrl: string | null = null;

  constructor(
    private readonly transfer: FileTransfer,
    onError: (err: unknown) => void,
  ) {
    const li = document.createElement('li');
    li.className = 'file-row';
    li.dataset['fileId'] = transfer.id;
    li.dataset['direction'] = transfer.direction;
    this.element = li;

    const head = el('div', 'file-head');
    const arrow = el('span', 'file-dir', transfer.direction === 'outgoing' ? '↑' : '↓');
    arrow.title = transfer.direction === 'outgoing' ? 'sending' : 'receiving';
    const name = el('span', 'file-name', transfer.name);
    name.title = transfer.name;
    head.append(arrow, name, el('span', 'file-size', formatBytes(transfer.size)));

    this.progress = document.createElement('progress');
    this.progress.className = 'file-progress';
    this.progress.max = Math.max(1, transfer.size);
    this.progress.value = 0;

    const info = el('div', 'file-info');
    this.stateEl = el('span', 'file-state');
    this.bytesEl = el('span', 'file-bytes');
    this.rateEl = el('span', 'file-rate');
    this.etaEl = el('span', 'file-eta');
    info.append(this.stateEl, this.bytesEl, this.rateEl, this.etaEl);

    this.actions = el('div', 'file-actions');
    if (transfer instanceof IncomingTransfer) {
      this.accept = button('Accept', 'file-accept ok', () => transfer.accept().catch(onError));
      this.reject = button('Reject', 'file-reject', () => transfer.reject().catch(onError));
      this.actions.append(this.accept, this.reject);
    } else {
      this.accept = null;
      this.reject = null;
    }
    this.cancel = button('Cancel', 'file-cancel danger', () => transfer.cancel().catch(onError));
    this.actions.append(this.cancel);

    li.append(head, this.progress, info, this.actions);
    this.update();
  }

  update(): void {
    const t = this.transfer;
    const li = this.element;
    li.dataset['state'] = t.state;
    li.dataset['via'] = t.via;
    li.dataset['bytes'] = String(t.bytes);
    this.progress.value = t.state === 'done' ? this.progress.max : t.bytes;
    const state = t.reason && t.final && t.state !== 'done' ? `${t.state} (${t.reason})` : t.state;
    this.stateEl.textContent = t.via === 'relay' ? `${state} · relay` : state;
    this.bytesEl.textContent = `${formatBytes(t.bytes)} / ${formatBytes(t.size)}`;
    const running = !t.final && t.state !== 'offered' && t.state !== 'preparing';
    const rate = t.rate;
    this.rateEl.textContent = running && rate > 0 ? `${formatBytes(rate)}/s` : '';
    const eta = t.eta;
    this.etaEl.textContent = running && eta !== null ? `${formatDuration(eta)} left` : '';
    const offered = t.state === 'offered';
    if (this.accept) this.accept.hidden = !offered;
    if (this.reject) this.reject.hidden = !offered;
    this.cancel.hidden = t.final;
    if (t instanceof IncomingTransfer && t.blob && t.state === 'done' && !this.link) {
      this.objectUrl = URL.createObjectURL(t.blob);
      const a = document.createElement('a');
      a.className = 'file-download';
      a.href = this.objectUrl;
      a.download = t.name;
      a.textContent = 'Download';
      this.link = a;
      this.actions.append(a);
    }
  }

  close(): void {
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = null;
    this.element.remove();
  }
}

/**
 * The room's file panel: a drop zone and a picker to send files to everyone
 * in the room, and one row per transfer in either direction.
 */
export class FilePanel {
  /** The last state seen per transfer id (kept after leaving, for tests). */
  readonly records: Record<string, FileRecord> = {};
  private readonly rows = new Map<string, FileRow>();
  private readonly transfers = new Map<string, FileTransfer>();
  private room: Room | null = null;
  private unsubscribes: Unsubscribe[] = [];
  private failingP2P = false;
  private patched = false;

  constructor(
    private readonly ui: FilePanelUi,
    private readonly options: {
      autoaccept: boolean;
      log: (type: string, detail: unknown) => void;
      onError: (err: unknown) => void;
    },
  ) {
    ui.pick.addEventListener('click', () => ui.input.click());
    ui.input.addEventListener('change', () => {
      const files = [...(ui.input.files ?? [])];
      ui.input.value = '';
      this.sendAll(files);
    });
    const drop = ui.drop;
    drop.addEventListener('dragover', (event) => {
      event.preventDefault();
      if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
      drop.classList.add('dragging');
    });
    drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      drop.classList.remove('dragging');
      this.sendAll([...(event.dataTransfer?.files ?? [])]);
    });
  }

  attach(room: Room): void {
    this.detach();
    this.room = room;
    this.ui.panel.hidden = false;
    const files = room.files;
    this.unsubscribes = [
      files.on('transfer', ({ transfer }) => this.track(transfer)),
      files.on('progress', ({ transfer }) => this.update(transfer)),
      files.on('offer', ({ transfer }) => {
        this.options.log('file:offer', { id: transfer.id, name: transfer.name, size: transfer.size, from: transfer.from });
        if (this.options.autoaccept) transfer.accept().catch(this.options.onError);
      }),
    ];
    for (const transfer of files.list()) this.track(transfer);
  }

  /** The room is gone: drop the rows (the records stay). */
  detach(): void {
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    this.unsubscribes = [];
    for (const row of this.rows.values()) row.close();
    this.rows.clear();
    this.room = null;
    this.ui.panel.hidden = true;
  }

  transfer(id: string): FileTransfer | undefined {
    return this.transfers.get(id);
  }

  /** Send one file (or blob) to everyone else in the room. */
  async send(file: Blob, options: SendFileOptions = {}): Promise<OutgoingTransfer> {
    const room = this.room;
    if (!room) throw new RtcError('not_found', 'join a room first');
    const relay = options.relay ?? this.ui.relay.checked;
    return room.files.send(file, { ...options, relay });
  }

  /**
   * Tests: make every `file:` data channel this page opens fail, as if no
   * peer-to-peer path existed (the SDK then falls back to the relay).
   */
  failP2P(on: boolean): void {
    this.failingP2P = on;
    if (this.patched || !on) return;
    this.patched = true;
    const proto = RTCPeerConnection.prototype;
    const original = proto.createDataChannel;
    const panel = this;
    proto.createDataChannel = function (this: RTCPeerConnection, label: string, init?: RTCDataChannelInit) {
      if (panel.failingP2P && label.startsWith('file:')) {
        throw new DOMException('peer-to-peer disabled for a test', 'OperationError');
      }
      return original.call(this, label, init);
    };
  }

  private sendAll(files: File[]): void {
    for (const file of files) this.send(file).catch(this.options.onError);
  }

  private track(transfer: FileTransfer): void {
    this.transfers.set(transfer.id, transfer);
    if (!this.rows.has(transfer.id)) {
      const row = new FileRow(transfer, this.options.onError);
      this.rows.set(transfer.id, row);
      this.ui.list.prepend(row.element);
    }
    this.update(transfer);
  }

  private update(transfer: FileTransfer): void {
    if (!this.transfers.has(transfer.id)) {
      this.track(transfer);
      return;
    }
    this.rows.get(transfer.id)?.update();
    const previous = this.records[transfer.id];
    const record: FileRecord = {
      id: transfer.id,
      direction: transfer.direction,
      name: transfer.name,
      size: transfer.size,
      mime: transfer.mime,
      state: transfer.state,
      bytes: transfer.bytes,
      sent: transfer.sent,
      rate: transfer.rate,
      eta: transfer.eta,
      via: transfer.via,
      sha256: transfer.sha256,
      receivedSha256: transfer instanceof IncomingTransfer ? transfer.receivedSha256 : null,
      bytesSent: transfer instanceof OutgoingTransfer ? transfer.bytesSent : 0,
      runs: transfer instanceof OutgoingTransfer ? transfer.runs.map((r) => ({ ...r })) : [],
      channels: transfer instanceof IncomingTransfer ? transfer.channels : 0,
      reason: transfer.reason,
      from: transfer.from,
      to: [...transfer.to],
    };
    this.records[transfer.id] = record;
    if (previous?.state !== record.state || previous?.via !== record.via) {
      this.options.log('file', { id: record.id, direction: record.direction, state: record.state, via: record.via, bytes: record.bytes, reason: record.reason });
    }
  }
}

/** Deterministic pseudo-random bytes (tests): word i is lowbias32(i * 0x9e3779b1 + seed * 0x85ebca77), little-endian. */
export function pseudoRandomBytes(size: number, seed = 1): Uint8Array<ArrayBuffer> {
  const words = new Uint32Array(Math.ceil(size / 4));
  const base = Math.imul(seed, 0x85ebca77);
  for (let i = 0; i < words.length; i++) {
    let h = (Math.imul(i, 0x9e3779b1) + base) | 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    h ^= h >>> 15;
    h = Math.imul(h, 0x846ca68b);
    h ^= h >>> 16;
    words[i] = h;
  }
  const bytes = new Uint8Array(words.buffer, 0, size);
  // Typed arrays use the platform's byte order; make it little-endian everywhere.
  if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
    const view = new DataView(words.buffer);
    for (let i = 0; i < words.length; i++) view.setUint32(i * 4, words[i]!, true);
  }
  return bytes;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function el(tag: string, className: string, text = ''): HTMLElement {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

function button(text: string, className: string, onClick: () => unknown): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = className;
  b.textContent = text;
  b.addEventListener('click', () => void onClick());
  return b;
}
