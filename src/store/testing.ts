// For unit tests of store users: a real local store server on a unix socket in a temporary directory, and a client of
// it, for the time of one callback (both closed and the directory removed afterwards, also when it throws).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { LocalStoreClient, LocalStoreServer } from './local.js';

export async function withLocalStore(prefix: string, fn: (store: LocalStoreClient) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tendril-${prefix}-`));
  const server = new LocalStoreServer({ dataDir: path.join(dir, 'data') });
  await server.listen({ socket: path.join(dir, 's.sock') });
  const store = new LocalStoreClient({ socket: path.join(dir, 's.sock') });
  try {
    await fn(store);
  } finally {
    await store.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
