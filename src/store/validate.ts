// Checks shared by every backend: kinds, names and revisions are validated before anything reaches a server.
import { StoreError } from './errors.js';
import { KINDS, type Kind, type WatchEvent } from './types.js';

/**
 * Names become path segments (local HTTP routes) and key suffixes (etcd `/tendril/<Kind>/<name>`), so they are
 * restricted to DNS-subdomain-like characters: no "/", no whitespace, bounded length.
 */
const NAME_RE = /^[A-Za-z0-9]([A-Za-z0-9._:-]{0,251}[A-Za-z0-9])?$/;

export function isKind(kind: unknown): kind is Kind {
  return typeof kind === 'string' && (KINDS as readonly string[]).includes(kind);
}

export function checkKind(kind: unknown): Kind {
  if (!isKind(kind)) {
    throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Unknown resource kind ${JSON.stringify(kind)}: expected one of ${KINDS.join(', ')}`);
  }
  return kind;
}

export function checkName(kind: Kind, name: unknown): string {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new StoreError(
      'TENDRIL_ERR_STORE_INVALID',
      `Invalid ${kind} name ${JSON.stringify(name)}: use 1-253 letters, digits, ".", "_", ":" or "-", starting and ending with a letter or digit`,
    );
  }
  return name;
}

/** A revision given by a caller: a non-negative safe integer. */
export function checkRevision(what: string, rev: unknown): number {
  if (typeof rev !== 'number' || !Number.isSafeInteger(rev) || rev < 0) {
    throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Invalid ${what} ${JSON.stringify(rev)}: expected an integer >= 0`);
  }
  return rev;
}

/** Values must survive a JSON round trip unchanged in meaning; undefined (and functions) cannot be stored. */
export function encodeValue(kind: Kind, name: string, value: unknown): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Cannot store ${kind} "${name}": value is not JSON-serializable`, { cause: err });
  }
  if (text === undefined) {
    throw new StoreError('TENDRIL_ERR_STORE_INVALID', `Cannot store ${kind} "${name}": value is not JSON-serializable`);
  }
  return text;
}

export function eventRevision(ev: WatchEvent<unknown>): number {
  return ev.type === 'put' ? ev.resource.revision : ev.revision;
}

export function eventKind(ev: WatchEvent<unknown>): Kind {
  return ev.type === 'put' ? ev.resource.kind : ev.kind;
}
