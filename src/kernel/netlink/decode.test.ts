// Unit tests: decoding rtnetlink answers into LinkInfo, AddrInfo, RouteInfo, NeighborInfo and filter info.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as K from './constants.js';
import { attrIPv4, attrMac, attrNested, attrS32, attrStr, attrU32 } from './attrs.js';
import { encodeIfAddrMsg, encodeIfInfoMsg, encodeNdMsg, encodeRtMsg, encodeTcMsg } from './headers.js';
import { decodeAddr, decodeBpfFilter, decodeLink, decodeNeighbor, decodeRoute } from './decode.js';
import type { Message } from './message.js';

const msg = (type: number, ...parts: Buffer[]): Message => ({ type, flags: 0, seq: 1, pid: 1, payload: Buffer.concat(parts) });

test('decodeLink() reads a veth whose peer lives in another namespace', () => {
  const m = msg(
    K.RTM_NEWLINK,
    encodeIfInfoMsg({ index: 2, flags: K.IFF_UP | 0x1000, type: 1 }),
    attrStr(K.IFLA_IFNAME, 'v0'),
    attrU32(K.IFLA_MTU, 1400),
    attrMac(K.IFLA_ADDRESS, '02:00:00:00:00:01'),
    attrU32(K.IFLA_LINK, 2),
    attrS32(K.IFLA_LINK_NETNSID, 0),
    attrU32(K.IFLA_MASTER, 4),
    attrNested(K.IFLA_LINKINFO, attrStr(K.IFLA_INFO_KIND, 'veth')),
  );
  assert.deepEqual(decodeLink(m), {
    index: 2,
    name: 'v0',
    mtu: 1400,
    mac: '02:00:00:00:00:01',
    up: true,
    noarp: false,
    kind: 'veth',
    masterIndex: 4,
    peerIndex: 2,
    linkNetnsId: 0,
  });
});

test('decodeLink() of a plain device leaves optional fields out', () => {
  const m = msg(K.RTM_NEWLINK, encodeIfInfoMsg({ index: 1, flags: 0x8 | K.IFF_NOARP }), attrStr(K.IFLA_IFNAME, 'lo'),
    attrU32(K.IFLA_MTU, 65536), attrMac(K.IFLA_ADDRESS, '00:00:00:00:00:00'));
  assert.deepEqual(decodeLink(m), { index: 1, name: 'lo', mtu: 65536, mac: '00:00:00:00:00:00', up: false, noarp: true });
});

test('decodeAddr() prefers IFA_LOCAL and skips other families', () => {
  const m = msg(K.RTM_NEWADDR, encodeIfAddrMsg({ family: K.AF_INET, prefixLen: 24, scope: 0, index: 3 }),
    attrIPv4(K.IFA_ADDRESS, '10.0.0.9'), attrIPv4(K.IFA_LOCAL, '10.0.0.1'));
  assert.deepEqual(decodeAddr(m), { index: 3, address: '10.0.0.1', prefixLen: 24, scope: 0 });
  assert.equal(decodeAddr(msg(K.RTM_NEWADDR, encodeIfAddrMsg({ family: 10, index: 3 }))), undefined);
});

test('decodeRoute() reads default and scoped routes with metrics', () => {
  const def = msg(K.RTM_NEWROUTE,
    encodeRtMsg({ family: K.AF_INET, table: 254, protocol: 3, scope: 0, type: 1 }),
    attrU32(K.RTA_TABLE, 254), attrIPv4(K.RTA_GATEWAY, '10.0.0.1'), attrU32(K.RTA_OIF, 2),
    attrNested(K.RTA_METRICS, attrU32(K.RTAX_MTU, 1450)));
  assert.deepEqual(decodeRoute(def), { dst: '0.0.0.0/0', gateway: '10.0.0.1', ifindex: 2, scope: 'universe', table: 254, protocol: 3, mtu: 1450 });
  const link = msg(K.RTM_NEWROUTE,
    encodeRtMsg({ family: K.AF_INET, dstLen: 32, table: 254, protocol: 4, scope: K.RT_SCOPE_LINK, type: 1 }),
    attrIPv4(K.RTA_DST, '10.0.0.1'), attrU32(K.RTA_OIF, 2), attrIPv4(K.RTA_PREFSRC, '10.0.0.2'));
  assert.deepEqual(decodeRoute(link), { dst: '10.0.0.1/32', ifindex: 2, src: '10.0.0.2', scope: 'link', table: 254, protocol: 4 });
});

test('decodeNeighbor() reads a permanent entry', () => {
  const m = msg(K.RTM_NEWNEIGH, encodeNdMsg({ family: K.AF_INET, ifindex: 2, state: K.NUD_PERMANENT }),
    attrIPv4(K.NDA_DST, '10.0.0.1'), attrMac(K.NDA_LLADDR, '02:00:00:00:00:01'));
  assert.deepEqual(decodeNeighbor(m), { ifindex: 2, ip: '10.0.0.1', mac: '02:00:00:00:00:01', state: 0x80, permanent: true });
});

test('decodeBpfFilter() reads a cls_bpf filter and skips the per-priority header entry', () => {
  const head = msg(K.RTM_NEWTFILTER, encodeTcMsg({ ifindex: 2, handle: 0, parent: 0xfffffff2, info: 0x00010300 }),
    attrStr(K.TCA_KIND, 'bpf'));
  assert.equal(decodeBpfFilter(head), undefined);
  const f = msg(K.RTM_NEWTFILTER, encodeTcMsg({ ifindex: 2, handle: 1, parent: 0xfffffff3, info: 0x00050300 }),
    attrStr(K.TCA_KIND, 'bpf'),
    attrNested(K.TCA_OPTIONS, attrStr(K.TCA_BPF_NAME, 'cil_to_netdev'), attrU32(K.TCA_BPF_FLAGS, 1), attrU32(K.TCA_BPF_ID, 42)));
  assert.deepEqual(decodeBpfFilter(f), {
    ifindex: 2, direction: 'egress', prio: 5, handle: 1, kind: 'bpf', name: 'cil_to_netdev', progId: 42, directAction: true,
  });
});
