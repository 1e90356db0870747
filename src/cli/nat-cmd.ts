// `tendril bpf nat list|flush`, `tendril bpf ipmasq list` and the Masquerading line of `status` (cilium-dbg style).
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import type { MasqStatus, NatEntry } from '../agent/index.js';
import { resolveSocket } from './node-cmd.js';

function client(cmd: Command): ApiClient {
  return new ApiClient(resolveSocket(cmd.optsWithGlobals()));
}

/** One line per entry, as `cilium-dbg bpf nat list` prints them. */
export function formatNatList(rows: NatEntry[]): string {
  const order = (e: NatEntry): string => `${e.direction === 'OUT' ? e.src : e.toAddr}:${e.direction === 'OUT' ? e.sport : e.toPort} ${e.direction}`;
  return [...rows]
    .sort((a, b) => order(a).localeCompare(order(b)) || a.protocol - b.protocol)
    .map((e) => `${e.proto} ${e.direction} ${e.src}:${e.sport} -> ${e.dst}:${e.dport} ${e.xlate} ${e.toAddr}:${e.toPort} Created=${e.age}sec ago\n`)
    .join('');
}

/** The value of the status line "Masquerading", Cilium's shape: `BPF   [eth0]   10.0.0.0/16 [IPv4: Enabled, IPv6: Disabled]`. */
export function formatMasquerading(m: MasqStatus | null | undefined): string {
  if (!m || m.mode === 'Disabled') return 'Disabled';
  const mode = m['ip-masq-agent'].enabled ? `${m.mode} (ip-masq-agent)` : m.mode;
  const cidr = m['native-routing-cidr'] ? `   ${m['native-routing-cidr']}` : '';
  return `${mode}   [${m.devices.join(', ')}]${cidr} [IPv4: Enabled, IPv6: Disabled]`;
}

/** `status --verbose`: the non-masquerade set and where it came from. */
export function formatMasqueradingVerbose(m: MasqStatus | null | undefined): string {
  if (!m || m.mode === 'Disabled') return '';
  let text = `Masquerading ports: ${m['port-range']}${m['node-ephemeral-range'] ? ` (node's own ephemeral ports: ${m['node-ephemeral-range']})` : ''}\n`;
  const a = m['ip-masq-agent'];
  if (a.enabled) {
    text += `Non-masquerade CIDRs (${a.fromFile ? a.file : `defaults, ${a.file} absent`}${a.error ? `; last read failed: ${a.error}` : ''}):\n`;
    text += a.cidrs.map((c) => `  ${c}\n`).join('');
  }
  return text;
}

export function registerNatViews(program: Command): void {
  const bpf = program.commands.find((c) => c.name() === 'bpf') ?? program.command('bpf');
  const nat = bpf.command('nat').description('the masquerading NAT table (tendril_snat_v4)');
  nat
    .command('list')
    .description('NAT entries of masqueraded flows, both directions')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<NatEntry[]>('/v1/map/nat');
      if (o.output === 'json') process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      else process.stdout.write(formatNatList(rows));
    });
  nat
    .command('flush')
    .description('delete every NAT entry (live masqueraded flows break)')
    .action(async (_o: unknown, cmd: Command) => {
      const r = await client(cmd).request<{ deleted: number }>('DELETE', '/v1/map/nat');
      process.stdout.write(`Flushed ${r.deleted} entries from tendril_snat_v4\n`);
    });
  bpf
    .command('ipmasq')
    .description('the ip-masq-agent non-masquerade CIDRs (tendril_ipmasq)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<string[]>('/v1/map/ipmasq');
      if (o.output === 'json') process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      else process.stdout.write(['IP PREFIX/ADDRESS', ...rows].map((r) => r + '\n').join(''));
    });
}
