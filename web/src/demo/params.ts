/** The demo's URL query parameters: everything a test needs to drive it without clicks. */
export interface DemoParams {
  room: string | null;
  name: string | null;
  /** A ready token; skips the dev token endpoint. */
  token: string | null;
  /** The dev token's user id (`sub`): two tabs with the same `user` are two devices of one user. */
  user: string | null;
  autojoin: boolean;
  /** iceTransportPolicy `relay`. */
  relay: boolean;
  /** Signaling server origin; default: this page's origin. */
  server: string | null;
  audio: boolean;
  video: boolean;
  /** The camera's ideal size and frame rate (default 640×480, the camera's rate); e.g. small for many tabs. */
  width: number | null;
  height: number | null;
  fps: number | null;
  speaking: boolean;
  /** Show the tiles' stats overlays from the start. */
  stats: boolean;
  /** Accept every file offered to us at once. */
  autoaccept: boolean;
  /** Show the "Test my camera, mic and network" page and start the echo test at once. */
  echo: boolean;
  /** The echo test's seconds of media before the report (1–60); null: the node's default. */
  duration: number | null;
}

export function readParams(search: string = window.location.search): DemoParams {
  const q = new URLSearchParams(search);
  const flag = (key: string, fallback: boolean): boolean => {
    const value = q.get(key);
    if (value === null) return fallback;
    return value === '1' || value === 'true' || value === 'yes';
  };
  const media = flag('media', true);
  return {
    room: q.get('room'),
    name: q.get('name'),
    token: q.get('token'),
    user: q.get('user'),
    autojoin: flag('autojoin', false),
    relay: flag('relay', false),
    server: q.get('server'),
    audio: media && flag('audio', true),
    video: media && flag('video', true),
    width: positive(q.get('width')),
    height: positive(q.get('height')),
    fps: positive(q.get('fps')),
    speaking: flag('speaking', false),
    stats: flag('stats', false),
    autoaccept: flag('autoaccept', false),
    echo: flag('echo', false),
    duration: positive(q.get('duration')),
  };
}

function positive(value: string | null): number | null {
  if (value === null || value.trim() === '') return null;
  const n = Number(value);
  return Number.isFinite(n) && n > 0 ? n : null;
}
