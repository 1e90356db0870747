// The conntrack GC thread (ct-gc.ts): opens the pinned conntrack and NAT maps itself, runs one ctGcPass() per
// request and answers with its result; closes its descriptors and exits when asked to stop.
import { parentPort, workerData } from 'node:worker_threads';
import { BpfMap } from '../kernel/bpf/index.js';
import { ctKeyCodec, ctValueCodec } from './maps.js';
import { natValueCodec } from './nat.js';
import { ctGcPass, type CtGcReply, type CtGcRequest } from './ct-gc.js';

const pins = workerData as { ct: [string, string]; snat: string };
const opened = [BpfMap.openPinned(pins.ct[0]), BpfMap.openPinned(pins.ct[1]), BpfMap.openPinned(pins.snat)];
const maps = {
  ct: [opened[0]!.typed(ctKeyCodec, ctValueCodec), opened[1]!.typed(ctKeyCodec, ctValueCodec)],
  snat: opened[2]!.typed(ctKeyCodec, natValueCodec),
};

parentPort!.on('message', (m: CtGcRequest) => {
  if ('stop' in m) {
    for (const o of opened) o.close();
    parentPort!.close();
    return;
  }
  let reply: CtGcReply;
  try {
    reply = { id: m.id, result: ctGcPass(maps, { egressIps: new Set(m.egressIps), idle: m.idle }) };
  } catch (err) {
    reply = { id: m.id, error: (err as Error).message };
  }
  parentPort!.postMessage(reply);
});
