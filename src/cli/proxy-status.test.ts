import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatProxyStatus } from './node-cmd.js';

test('status prints the proxy: port, redirects and request counters, or why there is none', () => {
  assert.equal(formatProxyStatus(null), 'Disabled (no L7 rule on this node)');
  assert.equal(
    formatProxyStatus({ port: 15080, running: true, pid: 42, restarts: 1, redirects: 2, stats: { connections: 3, requests: 10, forwarded: 7, denied: 3, errors: 0 } }),
    'OK   port 15080, 2 redirect(s) active, pid 42, 1 restart(s); requests 10 (7 allowed, 3 denied), 3 connection(s), 0 upstream error(s)',
  );
  assert.match(formatProxyStatus({ port: 16000, running: false, pid: null, restarts: 4, redirects: 1, stats: null }), /^Not running \(L7 ports fail closed\) {3}port 16000, 1 redirect\(s\) active, pid -, 4 restart\(s\)$/);
});
