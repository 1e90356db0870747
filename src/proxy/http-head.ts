// Just enough HTTP/1.x parsing for the fast proxy path: a message head (request or status line and headers) and
// the framing of its body (Content-Length, chunked), so the raw bytes can be forwarded as they are.

/** Node's default (--max-http-header-size): a head longer than this is refused (431 for requests). */
export const MAX_HEAD_BYTES = 16 * 1024;
/** A chunk-size or trailer line longer than this is refused. */
const MAX_LINE_BYTES = 4 * 1024;

/** A message the proxy does not forward: the status to answer with (requests) and why. */
export class HttpParseError extends Error {
  constructor(
    readonly status: 400 | 431 | 501,
    message: string,
  ) {
    super(message);
    this.name = 'HttpParseError';
  }
}

/** How a body is delimited. `close`: read until the connection closes (responses only). */
export type BodyFraming = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'close' };

export interface HttpHead {
  /** Bytes of the head, its terminating empty line included. */
  size: number;
  /** Header lines as they came: names as sent, values trimmed. */
  raw: string[];
  /** Lower-case name → values in order. */
  headers: Map<string, string[]>;
  /** 0 or 1 (HTTP/1.0, HTTP/1.1). */
  minor: number;
}

export interface RequestHead extends HttpHead {
  method: string;
  target: string;
  framing: BodyFraming;
  /** The connection stays open after this exchange (HTTP/1.1 without close, HTTP/1.0 with keep-alive). */
  keepAlive: boolean;
  /** An Upgrade (Connection: upgrade) or CONNECT: after the head the bytes are not HTTP. */
  upgrade: boolean;
  expectContinue: boolean;
}

export interface ResponseHead extends HttpHead {
  status: number;
  keepAlive: boolean;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible characters, space, tab and obs-text; no CR, LF, NUL or other controls.
// eslint-disable-next-line no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
// eslint-disable-next-line no-control-regex
const BAD_TARGET = /[\x00-\x20\x7f]/;
const DIGITS = /^[0-9]{1,15}$/;

/** Index just past the head's empty line in buf (from 0), or -1 while incomplete. Throws past `limit` bytes. */
export function headEnd(buf: Buffer, limit = MAX_HEAD_BYTES): number {
  const i = buf.indexOf('\r\n\r\n', 0, 'latin1');
  if (i >= 0) {
    if (i + 4 > limit) throw new HttpParseError(431, `head longer than ${limit} bytes`);
    return i + 4;
  }
  if (buf.length > limit) throw new HttpParseError(431, `head longer than ${limit} bytes`);
  return -1;
}

function parseFields(lines: string[], out: HttpHead): void {
  for (const line of lines) {
    if (line.length === 0) continue;
    if (line[0] === ' ' || line[0] === '\t') throw new HttpParseError(400, 'obsolete line folding');
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpParseError(400, `header line without a name: ${JSON.stringify(line.slice(0, 40))}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new HttpParseError(400, `bad header name ${JSON.stringify(name.slice(0, 40))}`);
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE.test(value)) throw new HttpParseError(400, `bad characters in header ${name}`);
    out.raw.push(name, value);
    const k = name.toLowerCase();
    const list = out.headers.get(k);
    if (list) list.push(value);
    else out.headers.set(k, [value]);
  }
}

function splitLines(buf: Buffer, size: number): string[] {
  const text = buf.toString('latin1', 0, size - 4);
  const lines = text.split('\r\n');
  for (const l of lines) if (l.includes('\n') || l.includes('\r')) throw new HttpParseError(400, 'bare CR or LF in the head');
  return lines;
}

function tokens(h: HttpHead, name: string): string[] {
  return (h.headers.get(name) ?? []).flatMap((v) => v.split(',')).map((t) => t.trim().toLowerCase()).filter((t) => t !== '');
}

function contentLength(h: HttpHead): number | undefined {
  const values = h.headers.get('content-length');
  if (values === undefined) return undefined;
  // The common case, one plain value, without the list handling below.
  if (values.length === 1 && DIGITS.test(values[0]!)) return Number(values[0]);
  const all = values.flatMap((v) => v.split(',')).map((v) => v.trim());
  if (!all.every((v) => DIGITS.test(v))) throw new HttpParseError(400, 'bad Content-Length');
  if (new Set(all.map(Number)).size !== 1) throw new HttpParseError(400, 'conflicting Content-Length values');
  return Number(all[0]);
}

function keepAliveOf(h: HttpHead): boolean {
  const c = tokens(h, 'connection');
  return h.minor === 1 ? !c.includes('close') : c.includes('keep-alive');
}

/** Parses a complete request head (buf[0..size), size from headEnd). Throws HttpParseError. */
export function parseRequestHead(buf: Buffer, size: number): RequestHead {
  const lines = splitLines(buf, size);
  // Empty lines before the request line are ignored (RFC 9112 2.2).
  while (lines.length > 0 && lines[0] === '') lines.shift();
  const first = lines.shift() ?? '';
  const m = /^([^ ]+) ([^ ]+) HTTP\/1\.([01])$/.exec(first);
  if (m === null) throw new HttpParseError(400, `bad request line ${JSON.stringify(first.slice(0, 60))}`);
  const [, method, target, minor] = m as unknown as [string, string, string, string];
  if (!TOKEN.test(method)) throw new HttpParseError(400, `bad method ${JSON.stringify(method.slice(0, 20))}`);
  if (BAD_TARGET.test(target)) throw new HttpParseError(400, 'bad request target');
  const h: RequestHead = {
    size,
    raw: [],
    headers: new Map(),
    minor: Number(minor),
    method,
    target,
    framing: { kind: 'none' },
    keepAlive: true,
    upgrade: false,
    expectContinue: false,
  };
  parseFields(lines, h);
  if (h.minor === 1 && !h.headers.has('host')) throw new HttpParseError(400, 'HTTP/1.1 request without Host');
  if ((h.headers.get('host')?.length ?? 0) > 1) throw new HttpParseError(400, 'more than one Host');
  const te = h.headers.has('transfer-encoding') ? tokens(h, 'transfer-encoding') : [];
  const cl = contentLength(h);
  if (te.length > 0) {
    // Both framings at once is how requests are smuggled: refuse it, as Node's parser does.
    if (cl !== undefined) throw new HttpParseError(400, 'both Transfer-Encoding and Content-Length');
    if (h.minor === 0) throw new HttpParseError(400, 'Transfer-Encoding in an HTTP/1.0 request');
    if (te.at(-1) !== 'chunked') throw new HttpParseError(501, `unsupported Transfer-Encoding ${te.join(', ')}`);
    h.framing = { kind: 'chunked' };
  } else if (cl !== undefined && cl > 0) h.framing = { kind: 'length', length: cl };
  const connection = tokens(h, 'connection');
  h.keepAlive = h.minor === 1 ? !connection.includes('close') : connection.includes('keep-alive');
  h.upgrade = method === 'CONNECT' || (h.headers.has('upgrade') && connection.includes('upgrade'));
  h.expectContinue = h.headers.has('expect') && tokens(h, 'expect').includes('100-continue');
  return h;
}

/** Parses a complete response head. Throws HttpParseError (the proxy answers 502 / drops the connection). */
export function parseResponseHead(buf: Buffer, size: number): ResponseHead {
  const lines = splitLines(buf, size);
  const first = lines.shift() ?? '';
  const m = /^HTTP\/1\.([01]) ([0-9]{3})(?: .*)?$/.exec(first);
  if (m === null) throw new HttpParseError(400, `bad status line ${JSON.stringify(first.slice(0, 60))}`);
  const h: ResponseHead = { size, raw: [], headers: new Map(), minor: Number(m[1]), status: Number(m[2]), keepAlive: true };
  parseFields(lines, h);
  h.keepAlive = keepAliveOf(h);
  return h;
}

/** The framing of a response's body, given the request it answers (RFC 9112 6.3). */
export function responseFraming(h: ResponseHead, requestMethod: string): BodyFraming {
  if (requestMethod === 'HEAD' || (h.status >= 100 && h.status < 200) || h.status === 204 || h.status === 304) return { kind: 'none' };
  const te = tokens(h, 'transfer-encoding');
  if (te.length > 0) return te.at(-1) === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
  const cl = contentLength(h);
  if (cl !== undefined) return cl > 0 ? { kind: 'length', length: cl } : { kind: 'none' };
  return { kind: 'close' };
}

/**
 * Follows a chunked body across reads to find where it ends; the bytes themselves are forwarded unchanged.
 * States: a size line, data, the CRLF after data, trailer lines until the empty one.
 */
export class ChunkedScanner {
  private state: 'size' | 'data' | 'data-crlf' | 'trailer' | 'done' = 'size';
  private remaining = 0;
  private line = '';

  get done(): boolean {
    return this.state === 'done';
  }

  /** Consumes bytes of buf from start; returns how many belong to this body (all, or up to its end). */
  scan(buf: Buffer, start = 0): number {
    let i = start;
    while (i < buf.length && this.state !== 'done') {
      if (this.state === 'data') {
        const n = Math.min(this.remaining, buf.length - i);
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.state = 'data-crlf';
        continue;
      }
      const nl = buf.indexOf(10, i);
      const end = nl < 0 ? buf.length : nl + 1;
      this.line += buf.toString('latin1', i, end);
      if (this.line.length > MAX_LINE_BYTES) throw new HttpParseError(400, 'chunk line too long');
      i = end;
      if (nl < 0) break;
      if (!this.line.endsWith('\r\n')) throw new HttpParseError(400, 'bare LF in chunked framing');
      const line = this.line.slice(0, -2);
      this.line = '';
      if (this.state === 'data-crlf') {
        if (line !== '') throw new HttpParseError(400, 'chunk data longer than its size');
        this.state = 'size';
      } else if (this.state === 'size') {
        const m = /^([0-9a-fA-F]{1,12})[ \t]*(;.*)?$/.exec(line);
        if (m === null) throw new HttpParseError(400, `bad chunk size ${JSON.stringify(line.slice(0, 20))}`);
        this.remaining = parseInt(m[1]!, 16);
        this.state = this.remaining === 0 ? 'trailer' : 'data';
      } else if (line === '') this.state = 'done';
      else if (BAD_VALUE.test(line)) throw new HttpParseError(400, 'bad trailer line');
    }
    return i - start;
  }
}
