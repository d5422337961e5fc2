/**
 * The recordings list: what `/api/recordings` holds for this token's rooms, each
 * with links to download its files and a Delete button (protocol.md, "Recording",
 * REST API). Shown only to tokens with grant `record`; the node checks it again.
 */

export interface RecordingsUi {
  panel: HTMLElement;
  list: HTMLUListElement;
  empty: HTMLElement;
  refresh: HTMLButtonElement;
}

export function findRecordingsUi(doc: Document = document): RecordingsUi {
  const get = <T extends HTMLElement>(id: string, type: new () => T): T => {
    const el = doc.getElementById(id);
    if (!(el instanceof type)) throw new Error(`demo page lacks #${id}`);
    return el;
  };
  return {
    panel: get('recordings-panel', HTMLElement),
    list: get('recordings-list', HTMLUListElement),
    empty: get('recordings-empty', HTMLElement),
    refresh: get('recordings-refresh', HTMLButtonElement),
  };
}

export interface RecordingsHost {
  readonly canRecord: boolean;
  /** The token the page uses now (sent as the bearer token, and on download links). */
  readonly currentToken: string | null;
  showError(err: unknown): void;
}

/** One catalog as the REST API returns it (the fields the list shows). */
export interface RecordingSummary {
  id: string;
  room: string;
  by: string;
  startedAt: number;
  stoppedAt: number | null;
  state: string;
  files: string[];
}

export class RecordingsList {
  /** The recordings shown, as the last refresh loaded them. */
  recordings: RecordingSummary[] = [];

  constructor(
    private readonly ui: RecordingsUi,
    private readonly host: RecordingsHost,
    private readonly server: string | null,
  ) {
    ui.refresh.addEventListener('click', () => void this.refresh().catch(() => undefined));
  }

  /** Show the panel when the token may record, and load the list. */
  async refresh(): Promise<RecordingSummary[]> {
    this.ui.panel.hidden = !this.host.canRecord;
    if (!this.host.canRecord) return [];
    try {
      const body = await this.request('GET', '/api/recordings');
      this.recordings = Array.isArray(body['recordings']) ? body['recordings'].map(summary) : [];
    } catch (err) {
      this.host.showError(err);
      throw err;
    }
    this.render();
    return this.recordings;
  }

  async remove(id: string): Promise<void> {
    try {
      await this.request('DELETE', `/api/recordings/${encodeURIComponent(id)}`);
    } catch (err) {
      this.host.showError(err);
      throw err;
    }
    await this.refresh();
  }

  /** Where a recording's file downloads from (the token rides along: a link has no headers). */
  fileUrl(id: string, name: string): string {
    const token = encodeURIComponent(this.host.currentToken ?? '');
    return `${this.base()}/api/recordings/${encodeURIComponent(id)}/files/${encodeURIComponent(name)}?token=${token}`;
  }

  private base(): string {
    return this.server ? this.server.replace(/\/+$/, '') : '';
  }

  private async request(method: string, path: string): Promise<Record<string, unknown>> {
    const response = await fetch(`${this.base()}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.host.currentToken ?? ''}` },
    });
    const body: unknown = await response.json().catch(() => null);
    if (!response.ok || !isObject(body)) {
      const error = isObject(body) && isObject(body['error']) ? body['error'] : {};
      throw new Error(`${String(error['code'] ?? response.status)}: ${String(error['message'] ?? '')}`);
    }
    return body;
  }

  private render(): void {
    this.ui.list.replaceChildren(...this.recordings.map((r) => this.row(r)));
    this.ui.empty.hidden = this.recordings.length > 0;
  }

  private row(rec: RecordingSummary): HTMLLIElement {
    const li = document.createElement('li');
    li.dataset['recording'] = rec.id;
    li.dataset['state'] = rec.state;
    const title = document.createElement('span');
    const seconds = rec.stoppedAt ? Math.round((rec.stoppedAt - rec.startedAt) / 1000) : null;
    title.textContent = `${rec.room} · ${new Date(rec.startedAt).toLocaleString()} · ${
      seconds === null ? rec.state : `${seconds} s`} · by ${rec.by}`;
    const files = document.createElement('span');
    files.className = 'recording-files';
    for (const name of rec.files) {
      const a = document.createElement('a');
      a.href = this.fileUrl(rec.id, name);
      a.download = name;
      a.textContent = name;
      files.append(a, ' ');
    }
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'danger';
    del.textContent = 'Delete';
    del.addEventListener('click', () => void this.remove(rec.id).catch(() => undefined));
    li.append(title, ' ', files, del);
    return li;
  }
}

function summary(value: unknown): RecordingSummary {
  const r = isObject(value) ? value : {};
  return {
    id: String(r['id'] ?? ''),
    room: String(r['room'] ?? ''),
    by: String(r['by'] ?? ''),
    startedAt: Number(r['startedAt'] ?? 0),
    stoppedAt: typeof r['stoppedAt'] === 'number' ? r['stoppedAt'] : null,
    state: String(r['state'] ?? ''),
    files: Array.isArray(r['files']) ? r['files'].map(String) : [],
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
