import { RtcError } from '../sdk';

const USER_KEY = 'mikoto-rtc:user';

/**
 * This tab's user id: `override` (the `user=` parameter) if given, else
 * random, kept in sessionStorage, so a reload stays the same user and a
 * second tab is a second user.
 */
export function tabUserId(override: string | null = null): string {
  if (override) {
    sessionStorage.setItem(USER_KEY, override);
    return override;
  }
  let id = sessionStorage.getItem(USER_KEY);
  if (!id) {
    // getRandomValues works on plain http too, unlike randomUUID.
    const bytes = crypto.getRandomValues(new Uint8Array(6));
    id = 'u-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    sessionStorage.setItem(USER_KEY, id);
  }
  return id;
}

/** Ask a dev-mode server for a token: `POST /api/dev/token {user, name}` -> `{token}`. */
export async function fetchDevToken(user: string, name: string, server: string | null): Promise<string> {
  const url = `${server ? server.replace(/\/+$/, '') : ''}/api/dev/token`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user, name }),
    });
  } catch (err) {
    throw new RtcError('unavailable', `cannot reach ${url}: ${String(err)}`);
  }
  const body: unknown = await response.json().catch(() => null);
  if (response.ok && isObject(body) && typeof body['token'] === 'string') return body['token'];
  if (isObject(body) && isObject(body['error'])) {
    throw RtcError.fromWire(body['error'], `dev token refused (HTTP ${response.status})`);
  }
  const hint = response.status === 404 ? ' (is the server in dev mode? otherwise pass ?token=...)' : '';
  throw new RtcError('unavailable', `dev token: HTTP ${response.status}${hint}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** What the demo reads from a token's payload: who it is and what it may do. */
export interface TokenClaims {
  sub: string | null;
  /** `grants.record`: may start and stop recordings. */
  record: boolean;
}

/**
 * Read a JWT's payload without checking it, only to decide what to show (the
 * Start recording button); the node checks the signature and the grants. Null
 * for something that is not a JWT.
 */
export function readClaims(token: string | null): TokenClaims | null {
  const payload = token?.split('.')[1];
  if (!payload) return null;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), '='));
    const json: unknown = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    if (!isObject(json)) return null;
    const grants = json['grants'];
    return {
      sub: typeof json['sub'] === 'string' ? json['sub'] : null,
      record: isObject(grants) && grants['record'] === true,
    };
  } catch {
    return null;
  }
}
