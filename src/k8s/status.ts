// The `kubernetes` part of status and its line (no client import: the CLI formats it).
/** Body of `kubernetes` in the agent's and operator's status. */
export interface KubernetesStatusView {
  ok: boolean;
  server: string;
  /** "1.32" */
  version: string | null;
  /** "v1.32.13" */
  'git-version': string | null;
  error: string | null;
}

/** The status line: "Ok 1.32 (v1.32.13)", or why not. */
export function formatKubernetesStatus(v: KubernetesStatusView | null | undefined): string {
  if (!v) return 'Disabled';
  if (v.ok) return `Ok ${v.version ?? '?'} (${v['git-version'] ?? '?'})`;
  return `Unreachable   ${v.server}${v.error ? `   (${v.error})` : ''}`;
}
