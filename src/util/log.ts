// The one structured logger; components take child loggers with a `subsys` field.
import { pino, destination, type Logger } from 'pino';

export type { Logger };

let root: Logger | undefined;

/** Root logger: JSON lines to stderr (or to `file`), level from TENDRIL_LOG_LEVEL. */
export function rootLogger(opts: { file?: string; level?: string } = {}): Logger {
  if (root) return root;
  const level = opts.level ?? process.env['TENDRIL_LOG_LEVEL'] ?? 'info';
  const dest = opts.file ? destination({ dest: opts.file, sync: true, mkdir: true }) : destination(2);
  root = pino({ level, base: { pid: process.pid } }, dest);
  return root;
}

export function logger(subsys: string): Logger {
  return rootLogger().child({ subsys });
}
