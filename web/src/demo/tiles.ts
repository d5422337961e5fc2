import type { ParticipantState } from '../sdk';
import type { Quality, StatsRow } from './stats';

/** The local tile's key in the grid (remote tiles are keyed by participant id). */
export const LOCAL = 'local';

export interface TileInfo {
  /** Participant id; empty for the local tile before the join ack. */
  id: string;
  name: string;
  local: boolean;
}

/**
 * One participant's tile: video, name, state badges and peer connection
 * state, mirrored into `data-*` attributes that styles and tests key on.
 */
export class Tile {
  readonly element: HTMLElement;
  private readonly video: HTMLVideoElement;
  private readonly audio: HTMLAudioElement | null;
  private readonly nameEl: HTMLElement;
  private readonly avatar: HTMLElement;
  private readonly mic: HTMLElement;
  private readonly cam: HTMLElement;
  private readonly hand: HTMLElement;
  private readonly screen: HTMLElement;
  private readonly conn: HTMLElement;
  private readonly quality: HTMLElement;
  private readonly stats: HTMLElement;

  constructor(info: TileInfo, private readonly onAudioBlocked: () => void) {
    const el = document.createElement('figure');
    el.className = 'tile';
    el.dataset['local'] = String(info.local);
    this.element = el;

    this.video = document.createElement('video');
    this.video.autoplay = true;
    this.video.playsInline = true;
    // Sound goes through a separate <audio>: a muted video always autoplays.
    this.video.muted = true;
    el.append(this.video);

    this.audio = info.local ? null : document.createElement('audio');
    if (this.audio) {
      this.audio.autoplay = true;
      el.append(this.audio);
    }

    this.avatar = span('avatar');
    el.append(this.avatar);

    const caption = document.createElement('figcaption');
    this.nameEl = span('tile-name');
    this.mic = span('badge mic');
    this.cam = span('badge cam');
    this.hand = span('badge hand', 'hand raised');
    this.screen = span('badge screen', 'sharing screen');
    this.conn = span('tile-conn');
    this.quality = span('tile-quality');
    this.quality.hidden = true;
    caption.append(this.nameEl, this.mic, this.cam, this.hand, this.screen, this.conn, this.quality);
    el.append(caption);

    // Shown while the grid says so (`.tiles[data-stats=on]`); filled by the stats view.
    this.stats = document.createElement('table');
    this.stats.className = 'tile-stats';
    el.append(this.stats);

    this.setId(info.id);
    this.setName(info.name);
    this.setState({ audio: false, video: false, screen: false, hand: false, speaking: false });
    this.setConnectionState(info.local ? 'local' : 'new');
    this.setPresence('connected');
  }

  /** Signaling presence: `reconnecting` while the participant's (or, on our tile, our) transport is lost. */
  setPresence(presence: string): void {
    this.element.dataset['connection'] = presence;
  }

  setId(id: string): void {
    this.element.dataset['participantId'] = id;
  }

  setName(name: string): void {
    this.nameEl.textContent = name;
    this.nameEl.title = name;
    this.avatar.textContent = (name.trim()[0] ?? '?').toUpperCase();
  }

  setState(state: Readonly<ParticipantState>): void {
    const data = this.element.dataset;
    data['audio'] = String(state.audio);
    data['video'] = String(state.video);
    data['screen'] = String(state.screen);
    data['hand'] = String(state.hand);
    data['speaking'] = String(state.speaking);
    this.mic.textContent = state.audio ? 'mic on' : 'mic off';
    this.mic.classList.toggle('off', !state.audio);
    this.cam.textContent = state.video ? 'cam on' : 'cam off';
    this.cam.classList.toggle('off', !state.video);
    this.hand.hidden = !state.hand;
    this.screen.hidden = !state.screen;
  }

  setConnectionState(state: string): void {
    this.element.dataset['connectionState'] = state;
    this.conn.textContent = state === 'local' ? 'you' : state;
  }

  /** The connection quality badge; null hides it (not measured yet, or our own tile). */
  setQuality(quality: Quality | null): void {
    this.quality.hidden = quality === null;
    this.quality.textContent = quality ?? '';
    this.quality.title = quality ? `connection: ${quality}` : '';
    if (quality) this.quality.dataset['quality'] = quality;
    else delete this.quality.dataset['quality'];
  }

  /** The stats overlay's lines, one `tr[data-field]` each. */
  setStats(rows: readonly StatsRow[]): void {
    this.stats.replaceChildren(
      ...rows.map((row) => {
        const tr = document.createElement('tr');
        tr.dataset['field'] = row.field;
        const th = document.createElement('th');
        th.textContent = row.label;
        const td = document.createElement('td');
        td.textContent = row.text;
        tr.append(th, td);
        return tr;
      }),
    );
  }

  setStream(stream: MediaStream | null): void {
    if (this.video.srcObject !== stream) this.video.srcObject = stream;
    this.video.play().catch(() => undefined);
    if (this.audio) {
      if (this.audio.srcObject !== stream) this.audio.srcObject = stream;
      this.playAudio();
    }
  }

  /** Retry audio playback (after a user gesture when autoplay was refused). */
  playAudio(): void {
    if (!this.audio?.srcObject) return;
    this.audio.play().catch((err: unknown) => {
      if (err instanceof DOMException && err.name === 'NotAllowedError') this.onAudioBlocked();
    });
  }

  close(): void {
    this.video.srcObject = null;
    if (this.audio) this.audio.srcObject = null;
    this.element.remove();
  }
}

/** The tile grid, keyed by participant id (`local` for our own tile). */
export class TileGrid {
  private readonly tiles = new Map<string, Tile>();

  constructor(
    private readonly container: HTMLElement,
    private readonly onAudioBlocked: () => void,
  ) {}

  get(key: string): Tile | undefined {
    return this.tiles.get(key);
  }

  ensure(key: string, info: TileInfo): Tile {
    let tile = this.tiles.get(key);
    if (!tile) {
      tile = new Tile(info, this.onAudioBlocked);
      this.tiles.set(key, tile);
      if (info.local) this.container.prepend(tile.element);
      else this.container.append(tile.element);
    }
    return tile;
  }

  remove(key: string): void {
    this.tiles.get(key)?.close();
    this.tiles.delete(key);
  }

  clear(): void {
    for (const tile of this.tiles.values()) tile.close();
    this.tiles.clear();
  }

  playAllAudio(): void {
    for (const tile of this.tiles.values()) tile.playAudio();
  }

  /** Show or hide every tile's stats overlay, now and for tiles added later. */
  showStats(on: boolean): void {
    this.container.dataset['stats'] = on ? 'on' : 'off';
  }
}

function span(className: string, text = ''): HTMLElement {
  const el = document.createElement('span');
  el.className = className;
  el.textContent = text;
  return el;
}
