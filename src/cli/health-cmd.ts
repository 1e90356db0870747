// `tendril healthz`: the probe command of the Kubernetes manifests (exec probes of the agent DaemonSet and the
// operator Deployment). It asks the component's own API over its unix socket and answers with the exit code:
// 0 healthy, 1 not. Liveness: the API answers. Readiness (--ready): the agent says ready (datapath up, IPAM has
// a pod CIDR, CNI config written), or the operator reaches its store (the apiserver in Kubernetes mode).
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import type { StatusView } from '../agent/index.js';
import type { OperatorStatusView } from '../operator/api.js';
import { resolveSocket } from './node-cmd.js';

export interface ProbeVerdict {
  ok: boolean;
  line: string;
}

/** The agent's verdict from its GET /v1/healthz answer. */
export function agentVerdict(s: StatusView, ready: boolean): ProbeVerdict {
  if (!ready) return { ok: true, line: `agent alive: ${s.tendril.state} ${s.tendril.message}` };
  if (s.ready) return { ok: true, line: `agent ready: ${s.tendril.state}, ${s.endpoints} endpoints` };
  return { ok: false, line: `agent not ready: ${s.tendril.state} ${s.tendril.message}` };
}

/** The operator's verdict from its GET /v1/status answer. */
export function operatorVerdict(s: OperatorStatusView, ready: boolean): ProbeVerdict {
  if (!ready) return { ok: true, line: 'operator alive' };
  if (s.store.ping.ok) return { ok: true, line: `operator ready${s.kubernetes ? (s.kubernetes.leader ? ' (leader)' : ` (standby, leader ${s.kubernetes.holder || 'none'})`) : ''}` };
  return { ok: false, line: `operator not ready: store unreachable: ${s.store.ping.error ?? 'no answer'}` };
}

export function registerHealthz(program: Command): void {
  program
    .command('healthz')
    .description('probe: exit 0 when the agent (or with --operator-socket the operator) is alive, with --ready when it is ready')
    .option('--ready', 'readiness instead of liveness')
    .option('--operator-socket <path>', 'probe the operator at this API socket instead of the agent')
    .option('--timeout <ms>', 'answer within this many ms', '5000')
    .action(async (o: { ready?: boolean; operatorSocket?: string; timeout: string }, cmd: Command) => {
      const timeoutMs = Number(o.timeout);
      let v: ProbeVerdict;
      try {
        if (o.operatorSocket) {
          const s = await new ApiClient(o.operatorSocket, 'operator').get<OperatorStatusView>('/v1/status', timeoutMs);
          v = operatorVerdict(s, o.ready === true);
        } else {
          const s = await new ApiClient(resolveSocket(cmd.optsWithGlobals())).get<StatusView>('/v1/healthz', timeoutMs);
          v = agentVerdict(s, o.ready === true);
        }
      } catch (err) {
        v = { ok: false, line: (err as Error).message };
      }
      process.stdout.write(v.line + '\n');
      process.exitCode = v.ok ? 0 : 1;
    });
}
