import { test } from 'node:test';
import assert from 'node:assert/strict';
import { masqYaml, parseMasqCidrs } from './masq.js';

test('non-masquerade CIDRs are normalised, each once; a bad one names itself and the flag', () => {
  assert.deepEqual(parseMasqCidrs(['10.0.1.7/16', '10.0.0.0/16', ' 192.168.10.0/24']), ['10.0.0.0/16', '192.168.10.0/24']);
  assert.throws(() => parseMasqCidrs(['10.0.0.0/33']), (e: Error & { code?: string }) => e.code === 'TENDRIL_ERR_LAB_INVALID' && /--non-masquerade-cidr "10\.0\.0\.0\/33"/.test(e.message));
  assert.throws(() => parseMasqCidrs(['10.0.0']), /--non-masquerade-cidr "10\.0\.0"/);
});

test('the file is ip-masq-agent\'s YAML; an empty list stays a list', () => {
  assert.equal(masqYaml({ nonMasqueradeCidrs: ['10.0.0.0/16', '192.168.10.0/24'], masqLinkLocal: false }), 'nonMasqueradeCIDRs:\n- 10.0.0.0/16\n- 192.168.10.0/24\nmasqLinkLocal: false\n');
  assert.equal(masqYaml({ nonMasqueradeCidrs: [], masqLinkLocal: true }), 'nonMasqueradeCIDRs: []\nmasqLinkLocal: true\n');
});
