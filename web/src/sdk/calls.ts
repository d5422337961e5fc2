import type { SignalingClient } from './client';
import { Emitter, type Unsubscribe } from './events';
import {
  FINAL_CALL_STATES,
  type CallIncomingEvent,
  type CallMedia,
  type CallState,
  type CallStateEvent,
  type RoomName,
  type UserId,
} from './types';

/**
 * `outgoing`: this device invited; `incoming`: this device was rung;
 * `other`: a call of ours this device only hears about (the caller's other devices).
 */
export type CallDirection = 'outgoing' | 'incoming' | 'other';

/** A call as this device knows it. Read-only to the app. */
export interface Call {
  readonly callId: string;
  readonly direction: CallDirection;
  /** The call's media room; null until the invite ack or `call:incoming` says. */
  readonly room: RoomName | null;
  /** The caller (incoming calls). */
  readonly from: { user: UserId; name: string } | null;
  /** The callees (outgoing calls). */
  readonly to: UserId[];
  readonly media: CallMedia | null;
  readonly state: CallState;
  /** Of the last state change: who caused it, on which device (session id), and why. */
  readonly by: UserId | null;
  readonly device: string | null;
  readonly reason: string | null;
  /** True once the state is final (declined, missed, ended, ...). */
  readonly ended: boolean;
}

export interface CallsEvents {
  /** A call rings on this device. */
  'call:incoming': { call: Call };
  /** A call's state changed (from a `call:state` event or this device's own request). */
  'call:state': { call: Call; previous: CallState | null };
}

interface MutableCall {
  callId: string;
  direction: CallDirection;
  room: RoomName | null;
  from: { user: UserId; name: string } | null;
  to: UserId[];
  media: CallMedia | null;
  state: CallState;
  by: UserId | null;
  device: string | null;
  reason: string | null;
  ended: boolean;
}

/** How far along a state is: a call never goes back (a late `ringing` after `accepted` is ignored). */
function rank(state: CallState): number {
  if (state === 'ringing') return 0;
  if (state === 'accepted') return 1;
  return 2;
}

/**
 * Ringing between users (protocol.md, "Calls"): every device of every party
 * hears about a call. Media goes through the call's room: on `accepted`, join
 * `call.room` with a `Room` like any other room.
 */
export class Calls extends Emitter<CallsEvents> {
  private readonly calls = new Map<string, MutableCall>();
  private readonly unsubscribes: Unsubscribe[];

  constructor(private readonly client: SignalingClient) {
    super();
    this.unsubscribes = [
      client.on('call:incoming', (e) => this.onIncoming(e)),
      client.on('call:state', (e) => this.onState(e)),
    ];
  }

  /** One call by id. */
  get(callId: string): Call | undefined {
    return this.calls.get(callId);
  }

  /** Every call this device heard of, oldest first. */
  list(): Call[] {
    return [...this.calls.values()];
  }

  /** Calls not over yet (ringing or accepted). */
  active(): Call[] {
    return this.list().filter((c) => !c.ended);
  }

  /**
   * Ring `to` (a user id or several). Resolves with the call once the node
   * has it (`ringing`); rejects with `bad_request`, `forbidden` (room not in
   * the grants), `not_found`, ...
   */
  async invite(to: UserId | UserId[], media: CallMedia, room?: RoomName): Promise<Call> {
    const ack = await this.client.request('call:invite', room === undefined ? { to, media } : { to, media, room });
    const call = this.ensure(ack.callId, 'outgoing');
    call.direction = 'outgoing';
    call.room = ack.room;
    call.to = Array.isArray(to) ? [...to] : [to];
    call.media = { ...media };
    // The `ringing` event may have come before the ack; if not, it is the state now.
    if (call.state === 'ringing' && !this.announced.has(call.callId)) this.announce(call, null);
    return call;
  }

  /** Accept on this device: the caller sees `accepted`, this user's other devices `answered_elsewhere`. */
  accept(callId: string): Promise<Call> {
    return this.act('call:accept', callId);
  }

  /** Decline (for this user, on every device). */
  decline(callId: string, reason?: string): Promise<Call> {
    return this.act('call:decline', callId, reason);
  }

  /** The caller gives up while it rings. */
  cancel(callId: string): Promise<Call> {
    return this.act('call:cancel', callId);
  }

  /** Leave an accepted call. */
  hangup(callId: string): Promise<Call> {
    return this.act('call:hangup', callId);
  }

  /** Stop listening to the client. */
  dispose(): void {
    for (const unsubscribe of this.unsubscribes) unsubscribe();
    this.removeAllListeners();
  }

  private async act(
    event: 'call:accept' | 'call:decline' | 'call:cancel' | 'call:hangup',
    callId: string,
    reason?: string,
  ): Promise<Call> {
    const ack =
      event === 'call:decline' && reason !== undefined
        ? await this.client.request(event, { callId, reason })
        : await this.client.request(event, { callId });
    const call = this.ensure(callId, 'other');
    if (typeof ack.state === 'string') this.apply(call, { callId, state: ack.state });
    return call;
  }

  /** Calls whose first state was announced (so `invite` does not announce `ringing` twice). */
  private readonly announced = new Set<string>();

  private ensure(callId: string, direction: CallDirection): MutableCall {
    let call = this.calls.get(callId);
    if (!call) {
      call = {
        callId,
        direction,
        room: null,
        from: null,
        to: [],
        media: null,
        state: 'ringing',
        by: null,
        device: null,
        reason: null,
        ended: false,
      };
      this.calls.set(callId, call);
    }
    return call;
  }

  private onIncoming(event: CallIncomingEvent): void {
    if (typeof event.callId !== 'string') return;
    const known = this.calls.get(event.callId);
    const call = this.ensure(event.callId, 'incoming');
    call.direction = 'incoming';
    call.from = event.from ? { user: event.from.user, name: event.from.name } : null;
    call.media = event.media ? { ...event.media } : null;
    call.room = event.room ?? null;
    if (call.ended) return;
    this.emit('call:incoming', { call });
    if (!known) this.announce(call, null);
  }

  private onState(event: CallStateEvent): void {
    if (typeof event.callId !== 'string' || typeof event.state !== 'string') return;
    const known = this.calls.has(event.callId);
    const call = this.ensure(event.callId, 'other');
    if (!known) {
      this.setFields(call, event);
      this.announce(call, null);
      return;
    }
    this.apply(call, event);
  }

  private apply(call: MutableCall, event: CallStateEvent): void {
    if (call.ended || rank(event.state) < rank(call.state)) return;
    const previous = call.state;
    const changed = previous !== event.state || !this.announced.has(call.callId);
    this.setFields(call, event);
    if (changed) this.announce(call, previous === event.state ? null : previous);
  }

  private setFields(call: MutableCall, event: CallStateEvent): void {
    call.state = event.state;
    if (event.by !== undefined) call.by = event.by;
    if (event.device !== undefined) call.device = event.device;
    if (event.reason !== undefined) call.reason = event.reason;
    call.ended = FINAL_CALL_STATES.includes(event.state);
  }

  private announce(call: MutableCall, previous: CallState | null): void {
    this.announced.add(call.callId);
    this.emit('call:state', { call, previous });
  }
}
