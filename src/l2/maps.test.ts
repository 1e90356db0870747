// The L2 responder codec agrees with bpf/lib/l2announce.h: size and every named member's offset and size (BTF).
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Btf } from '../kernel/bpf/index.js';
import { l2ResponderEntryCodec } from './maps.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

test('struct l2_responder_entry in host.o matches l2ResponderEntryCodec (BTF)', () => {
  const layout = Btf.fromFile(root + 'build/bpf/host.o').struct('l2_responder_entry');
  assert.equal(layout.size, l2ResponderEntryCodec.size);
  const fromBtf = layout.members.filter((m) => !m.name.startsWith('pad')).map((m) => ({ name: m.name, offset: m.offset, size: m.size }));
  const fromCodec = l2ResponderEntryCodec.layout.map((f) => ({ name: f.name === 'expiresNs' ? 'expires_ns' : f.name, offset: f.offset, size: f.size })).sort((a, b) => a.offset - b.offset);
  assert.deepEqual(fromBtf, fromCodec);
});
