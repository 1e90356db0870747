import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connectionSummary, dissect, flowSummary, icmpv4TypeCode, layerLines, tcpFlagList } from './dissect.js';
import { arpPacket, icmpPacket, tcpPacket, udpPacket } from './testing.js';

const ping = icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71', echoId: 54, seq: 1 });

test('dissect() reads Ethernet, IPv4 and ICMPv4 echo fields', () => {
  const d = dissect(ping);
  assert.deepEqual(d.ethernet, { src: 'a2:cc:fe:3f:b5:99', dst: '0e:98:9e:22:60:65', ethertype: 0x0800 });
  assert.equal(d.ipv4?.src, '172.20.2.179');
  assert.equal(d.ipv4?.dst, '172.20.2.71');
  assert.equal(d.ipv4?.ttl, 63);
  assert.equal(d.ipv4?.totalLength, 84);
  assert.equal(d.ipv4?.flags, 2);
  assert.deepEqual({ type: d.icmpv4?.type, code: d.icmpv4?.code, id: d.icmpv4?.id, seq: d.icmpv4?.seq }, { type: 8, code: 0, id: 54, seq: 1 });
  assert.equal(d.truncated, false);
});

test('dissect() reads TCP ports, flags and options', () => {
  const d = dissect(tcpPacket({ src: '10.0.0.5', dst: '10.0.1.7', sport: 43210, dport: 80, flags: 'SYN' }));
  assert.equal(d.tcp?.srcPort, 43210);
  assert.equal(d.tcp?.dstPort, 80);
  assert.deepEqual(d.tcp?.flags, { SYN: true });
  assert.deepEqual(d.tcp?.options, ['TCPOption(MSS:1460)', 'TCPOption(SACKPermitted:)', 'TCPOption(Timestamps:12345/0)', 'TCPOption(NOP:)', 'TCPOption(WindowScale:07)']);
  const fin = dissect(tcpPacket({ src: '10.0.0.5', dst: '10.0.1.7', sport: 1, dport: 2, flags: 'FIN,ACK,PSH' }));
  assert.deepEqual(fin.tcp?.flags, { FIN: true, PSH: true, ACK: true });
});

test('dissect() reads UDP and ARP', () => {
  const u = dissect(udpPacket({ src: '10.0.0.5', dst: '10.0.0.10', sport: 40000, dport: 53, payload: 30 }));
  assert.deepEqual({ s: u.udp?.srcPort, d: u.udp?.dstPort, len: u.udp?.length }, { s: 40000, d: 53, len: 38 });
  const a = dissect(arpPacket({ srcMac: 'aa:bb:cc:dd:ee:ff', senderIp: '172.20.0.3', targetIp: '172.20.0.1' }));
  assert.equal(a.ipv4, undefined);
  assert.equal(a.arp?.op, 1);
  assert.equal(a.arp?.senderIp, '172.20.0.3');
  assert.equal(a.arp?.targetIp, '172.20.0.1');
  assert.equal(flowSummary(a), 'ARP Request who-has 172.20.0.1 tell 172.20.0.3');
});

test('dissect() never throws on short captures and says the capture was truncated', () => {
  assert.deepEqual(dissect(Buffer.alloc(0)), { truncated: false });
  assert.equal(dissect(ping.subarray(0, 20)).truncated, true);
  const d = dissect(ping.subarray(0, 36));
  assert.equal(d.ipv4?.src, '172.20.2.179');
  assert.equal(d.icmpv4, undefined);
  assert.equal(d.truncated, true);
});

test('icmpv4TypeCode() names types and codes as gopacket', () => {
  assert.equal(icmpv4TypeCode(8, 0), 'EchoRequest');
  assert.equal(icmpv4TypeCode(0, 0), 'EchoReply');
  assert.equal(icmpv4TypeCode(3, 3), 'DestinationUnreachable(Port)');
  assert.equal(icmpv4TypeCode(11, 0), 'TimeExceeded(TTLExceeded)');
  assert.equal(icmpv4TypeCode(8, 5), 'EchoRequest(Code: 5)');
  assert.equal(icmpv4TypeCode(99, 1), '99(1)');
});

test('flowSummary() is what Hubble puts in Summary', () => {
  assert.equal(flowSummary(dissect(ping)), 'ICMPv4 EchoRequest');
  assert.equal(flowSummary(dissect(tcpPacket({ src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2, flags: 'SYN,ACK' }))), 'TCP Flags: SYN, ACK');
  assert.equal(flowSummary(dissect(tcpPacket({ src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2, flags: 'FIN,ACK' }))), 'TCP Flags: ACK, FIN');
  assert.equal(flowSummary(dissect(udpPacket({ src: '1.1.1.1', dst: '2.2.2.2', sport: 1, dport: 2 }))), 'UDP');
  assert.deepEqual(tcpFlagList({ NS: true, FIN: true, SYN: true, PSH: true }), ['SYN', 'FIN', 'PSH', 'NS']);
});

test('connectionSummary() is what cilium monitor prints after the colon', () => {
  assert.equal(connectionSummary(dissect(ping)), '172.20.2.179 -> 172.20.2.71 ICMPv4 EchoRequest');
  assert.equal(connectionSummary(dissect(tcpPacket({ src: '10.0.0.5', dst: '10.0.1.7', sport: 43210, dport: 80, flags: 'SYN' }))), '10.0.0.5:43210 -> 10.0.1.7:80 tcp SYN');
  assert.equal(connectionSummary(dissect(udpPacket({ src: '10.0.0.5', dst: '10.0.0.10', sport: 40000, dport: 53 }))), '10.0.0.5:40000 -> 10.0.0.10:53 udp');
});

test('layerLines() prints the seed\'s -vv dissection of a ping', () => {
  const lines = layerLines(ping);
  assert.equal(lines.length, 3);
  assert.equal(lines[0], 'Ethernet\t{Contents=[..14..] Payload=[..84..] SrcMAC=a2:cc:fe:3f:b5:99 DstMAC=0e:98:9e:22:60:65 EthernetType=IPv4 Length=0}');
  // Same header fields as the seed's capture, checksum included.
  assert.equal(
    lines[1],
    'IPv4\t{Contents=[..20..] Payload=[..64..] Version=4 IHL=5 TOS=0 Length=84 Id=36008 Flags=DF FragOffset=0 TTL=63 Protocol=ICMPv4 Checksum=20958 SrcIP=172.20.2.179 DstIP=172.20.2.71 Options=[] Padding=[]}',
  );
  assert.match(lines[2]!, /^ICMPv4\t\{Contents=\[\.\.8\.\.\] Payload=\[\.\.56\.\.\] TypeCode=EchoRequest Checksum=\d+ Id=54 Seq=1\}$/);
  const tcp = layerLines(tcpPacket({ src: '10.0.0.5', dst: '10.0.1.7', sport: 43210, dport: 80, flags: 'SYN' }))[2]!;
  assert.match(tcp, /^TCP\t\{Contents=\[\.\.40\.\.\] Payload=\[\] SrcPort=43210 DstPort=80\(http\) Seq=1000 Ack=0 DataOffset=10 FIN=false SYN=true RST=false /);
});
