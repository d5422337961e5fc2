/** Where the SDK reports what it cannot throw (async callbacks, ignored races). */
export interface Logger {
  debug(...args: unknown[]): void;
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

const PREFIX = 'mikoto-rtc:';

/** Console logger; `debug` is silent unless asked for. */
export function consoleLogger(verbose = false): Logger {
  return {
    debug: verbose ? (...args) => console.debug(PREFIX, ...args) : () => undefined,
    info: (...args) => console.info(PREFIX, ...args),
    warn: (...args) => console.warn(PREFIX, ...args),
    error: (...args) => console.error(PREFIX, ...args),
  };
}
