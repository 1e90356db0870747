// The CNI configuration list the agent writes for runtimes (05-tendril.conflist).
import { LATEST_VERSION, type CniVersion } from './errors.js';

export const CONFLIST_NAME = '05-tendril.conflist';
/** The executable's file name: runtimes find the plugin by "type" in their CNI bin dirs. */
export const PLUGIN_TYPE = 'tendril-cni';

export interface ConflistOptions {
  /** The agent's unix socket; the shim reads it from its stdin config. */
  agentSocket: string;
  name?: string;
  cniVersion?: CniVersion;
  /** Pod MTU override; the agent's own MTU applies when absent. */
  mtu?: number;
}

/** JSON text of the conflist (pretty-printed, as a human will read it in /etc/cni/net.d). */
export function tendrilConflist(o: ConflistOptions): string {
  const plugin: Record<string, unknown> = { type: PLUGIN_TYPE, 'agent-socket': o.agentSocket };
  if (o.mtu !== undefined) plugin['mtu'] = o.mtu;
  const list = { cniVersion: o.cniVersion ?? LATEST_VERSION, name: o.name ?? 'tendril', plugins: [plugin] };
  return JSON.stringify(list, null, 2) + '\n';
}
