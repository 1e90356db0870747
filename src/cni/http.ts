// The agent's POST /v1/cni endpoint: the shim's HTTP request in, the CNI answer and exit code out.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { CniCode, CniError } from './errors.js';
import type { CniHandler, CniResponse } from './plugin.js';

/** A network config is a few KiB; anything near this is not one. */
const MAX_BODY = 4 * 1024 * 1024;

/** HTTP status for a CNI outcome; informative only, the shim goes by X-Cni-Exit-Code. */
function httpStatus(r: CniResponse): number {
  if (r.exitCode === 0) return 200;
  switch (r.cniCode) {
    case CniCode.UNKNOWN_CONTAINER:
      return 404;
    case CniCode.TRY_AGAIN_LATER:
    case CniCode.NOT_AVAILABLE:
    case CniCode.LIMITED_CONNECTIVITY:
    case CniCode.POOL_EXHAUSTED:
      return 503;
    case CniCode.ADDRESS_IN_USE:
    case CniCode.SANDBOX_TAKEN:
      return 409;
    case CniCode.IO_FAILURE:
    case CniCode.INTERNAL:
    case undefined:
      return 500;
    default:
      return 400;
  }
}

/** Answers one forwarded CNI call. Never rejects: every failure is a CNI error reply. */
export async function serveCni(handler: CniHandler, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let reply: CniResponse;
  try {
    const body = await readBody(req);
    const headers: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    reply = await handler.handleRaw(headers, body);
  } catch (err) {
    // handleRaw() never rejects; what fails here is reading the request.
    const why = err instanceof Error ? err.message : String(err);
    const e = err instanceof CniError ? err : new CniError(CniCode.IO_FAILURE, `Cannot read the CNI request: ${why}`, { cause: err });
    reply = { exitCode: 1, stdout: JSON.stringify(e.toJSON()), cniCode: e.code };
  }
  if (res.headersSent || res.destroyed) return;
  res.writeHead(httpStatus(reply), {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(reply.stdout),
    'X-Cni-Exit-Code': String(reply.exitCode),
    Connection: 'close',
  });
  res.end(reply.stdout);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) {
      throw new CniError(CniCode.DECODE_FAILURE, `decoding failure: network config is larger than ${MAX_BODY} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
