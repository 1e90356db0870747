// A free loopback port for the store tests (polling for a condition is proc.ts's until()).
import net from 'node:net';

/**
 * A loopback TCP port free right now, below the ephemeral range (32768+): a port the kernel handed out for
 * `listen(0)` is also what the next outgoing connection of any process may take before the caller binds it (an
 * etcd member once failed with EADDRINUSE so). 20000–32767 is clear of the ranges tests give the kit (16xxx–17xxx).
 */
export async function freePort(): Promise<number> {
  for (let tries = 0; ; tries++) {
    const port = 20000 + Math.floor(Math.random() * 12768);
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
    if (tries > 1000) throw new Error('No free loopback port in 20000-32767');
  }
}
