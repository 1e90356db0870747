// Claiming a unix socket path for a server (agent API, operator API, local store, flow servers): one rule for all.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/** Why a path cannot be claimed: a live server answers there, or something other than a socket is in the way. */
export type SocketClaimProblem = 'in-use' | 'not-a-socket';

export class SocketClaimError extends Error {
  readonly code = 'TENDRIL_ERR_SOCKET_IN_USE';
  constructor(
    readonly file: string,
    readonly problem: SocketClaimProblem,
  ) {
    super(`Cannot listen on "${file}": ${problem === 'in-use' ? 'another server is listening there' : 'the path exists and is not a socket'}`);
    this.name = 'SocketClaimError';
  }
}

/** Whether a server accepts connections on @file now. */
export function socketAnswers(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect(file);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/**
 * Makes @file free for a new server: creates its directory (root-only when new) and removes a socket left by a
 * dead server, but never one a live server still answers on (probed with connect()), nor a file that is no socket.
 * Throws a SocketClaimError otherwise; callers may turn it into their component's coded error.
 */
export async function claimSocketPath(file: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new SocketClaimError(file, 'not-a-socket');
  if (await socketAnswers(file)) throw new SocketClaimError(file, 'in-use');
  fs.rmSync(file, { force: true });
}
