// The agent's socket-level LB (--bpf-lb-sock-cgroup): started once the datapath pinned the LB maps, stopped before it.
import { SockLb, removeSockLbLinks } from '../datapath/index.js';
import type { NodeDatapath, SockBackend } from '../datapath/index.js';
import type { Logger } from '../util/log.js';
import type { AgentConfig } from './config.js';

/** The sock programs on cfg.sockLbCgroup, or undefined when socket LB is off. Throws when it cannot attach. */
export function startSockLb(cfg: AgentConfig, dp: NodeDatapath, log: Logger): SockLb | undefined {
  if (!cfg.sockLbCgroup) {
    // Socket LB switched off since the last run: its pinned links would keep the hooks on.
    const gone = removeSockLbLinks(cfg.bpfRoot);
    if (gone.length > 0) log.info({ pins: gone }, 'socket LB off: removed the pinned sock links of an earlier run');
    return undefined;
  }
  void dp; // the node's maps are pinned by then: sock.o finds them under cfg.bpfRoot
  const s = new SockLb({ objDir: cfg.objDir, bpfRoot: cfg.bpfRoot, nodeIP: cfg.nodeIP ?? '0.0.0.0', cgroup: cfg.sockLbCgroup });
  s.start();
  log.info({ cgroup: cfg.sockLbCgroup, links: Object.fromEntries(s.how) }, 'socket LB on (connect4, sendmsg4, recvmsg4, getpeername4; pinned links)');
  return s;
}

export function sockLbStatus(s: SockLb | undefined): { enabled: boolean; cgroup: string | null } {
  return { enabled: s?.enabled ?? false, cgroup: s?.cgroup ?? null };
}

/**
 * Backends left frontends: destroy the sockets socket LB connected to them through those frontends, in the node's
 * namespace and each pod's (`netns`), so their owners fail at once (ECONNABORTED) and reconnect to a live backend.
 * Queued (SockLb.terminateLater()): the walk runs one namespace per event-loop turn, off the service sync that found
 * the removals, and removals queued meanwhile share the next walk. Never throws.
 */
export function terminateBackendSockets(s: SockLb | undefined, backends: SockBackend[], netns: string[], log: Logger): void {
  if (!s?.enabled) return;
  try {
    s.terminateLater(backends, () => netns, (r, done) => {
      if (r.destroyed > 0 || r.failed.length > 0) log.info({ backends: done.map((b) => `${b.ip}:${b.port}/${b.proto} (service ${b.revNatIndex})`), destroyed: r.destroyed, failed: r.failed }, 'destroyed the sockets of removed backends');
    });
  } catch (err) {
    log.warn({ err }, 'cannot destroy the sockets of removed backends');
  }
}
