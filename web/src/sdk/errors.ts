import { SERVER_ERROR_CODES, type ErrorCode, type ServerErrorCode } from './types';

/**
 * The one error type the SDK rejects with: a protocol error code and a
 * human-readable message. Server errors keep the server's code; `timeout` and
 * `disconnected` are produced by the client.
 */
export class RtcError extends Error {
  override readonly name = 'RtcError';

  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }

  /** Build from a wire `{code, message}`; an unknown code becomes `internal`. */
  static fromWire(value: unknown, fallbackMessage = 'unknown error'): RtcError {
    if (typeof value === 'object' && value !== null) {
      const { code, message } = value as { code?: unknown; message?: unknown };
      const text = typeof message === 'string' && message ? message : fallbackMessage;
      if (isServerErrorCode(code)) return new RtcError(code, text);
      return new RtcError('internal', text);
    }
    return new RtcError('internal', fallbackMessage);
  }
}

export function isServerErrorCode(value: unknown): value is ServerErrorCode {
  return typeof value === 'string' && (SERVER_ERROR_CODES as readonly string[]).includes(value);
}

export function isRtcError(value: unknown): value is RtcError {
  return value instanceof RtcError;
}
