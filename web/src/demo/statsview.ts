import type { Room } from '../sdk';
import { inboundRows, inboundStats, outboundRows, outboundStats, type InboundStats, type OutboundStats } from './stats';
import { LOCAL, type TileGrid } from './tiles';

/** How often the tiles' numbers are refreshed. */
const PERIOD_MS = 1000;
/** The key that shows or hides the overlays (not while typing). */
const SHORTCUT = 's';

/**
 * The tiles' quality badges and stats overlays: while a room is attached,
 * once a second, each remote participant's receivers (`room.receivers(id)`,
 * mesh or forwarded) and our own sending connections are asked for stats,
 * turned into numbers by `stats.ts`, and shown on the tiles. The overlays are
 * toggled by `#toggle-stats`, the `s` key, or shown from the start with
 * `stats=1`; the badges always show.
 */
export class StatsView {
  /** The last numbers per remote participant (test hooks). */
  readonly remote = new Map<string, InboundStats>();
  /** The last numbers of what we send. */
  local: OutboundStats | null = null;
  private room: Room | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private _visible = false;

  constructor(
    private readonly tiles: TileGrid,
    private readonly button: HTMLButtonElement,
    visible: boolean,
  ) {
    this.setVisible(visible);
    button.addEventListener('click', () => this.setVisible(!this._visible));
    document.addEventListener('keydown', (event) => {
      if (event.key !== SHORTCUT || event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
      this.setVisible(!this._visible);
    });
  }

  get visible(): boolean {
    return this._visible;
  }

  /** Whether a refresh is scheduled (only while a room is attached). */
  get running(): boolean {
    return this.timer !== null;
  }

  setVisible(on: boolean): void {
    this._visible = on;
    this.tiles.showStats(on);
    this.button.setAttribute('aria-pressed', String(on));
    this.button.textContent = on ? 'Hide stats' : 'Show stats';
  }

  attach(room: Room): void {
    this.detach();
    this.room = room;
    this.schedule(room);
  }

  /** Stop refreshing and forget every number (the tiles go with the room). */
  detach(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.room = null;
    this.remote.clear();
    this.local = null;
  }

  /** The next refresh a period after this one ended: a slow `getStats()` never stacks refreshes up. */
  private schedule(room: Room): void {
    this.timer = setTimeout(() => {
      void this.refresh(room)
        .catch(() => undefined)
        .finally(() => {
          if (this.room === room) this.schedule(room);
        });
    }, PERIOD_MS);
  }

  private async refresh(room: Room): Promise<void> {
    const participants = [...room.participants.values()];
    const inbound = await Promise.all(
      participants.map(async (p) => {
        const reports = await Promise.all(room.receivers(p.id).map((r) => r.getStats()));
        return inboundStats(reports, this.remote.get(p.id)?.sample ?? null, p.state.video);
      }),
    );
    const forwarded = room.forwardConnections();
    const sending = forwarded ? [forwarded.up] : [...room.peerConnections().values()];
    const outbound = outboundStats(await Promise.all(sending.map((pc) => pc.getStats())), this.local?.sample ?? null);
    if (this.room !== room) return;

    // Who left is forgotten (their tile is gone already).
    const present = new Set(participants.map((p) => p.id));
    for (const id of this.remote.keys()) if (!present.has(id)) this.remote.delete(id);
    participants.forEach((p, i) => {
      const stats = inbound[i];
      if (!stats) return;
      this.remote.set(p.id, stats);
      const tile = this.tiles.get(p.id);
      tile?.setQuality(stats.quality);
      tile?.setStats(inboundRows(stats));
    });
    this.local = outbound;
    this.tiles.get(LOCAL)?.setStats(outboundRows(outbound));
  }
}

function typing(target: EventTarget | null): boolean {
  return (
    target instanceof HTMLInputElement ||
    target instanceof HTMLTextAreaElement ||
    target instanceof HTMLSelectElement ||
    (target instanceof HTMLElement && target.isContentEditable)
  );
}
