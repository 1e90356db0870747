// TendrilEgressGatewayPolicy YAML for the lab's tests and benchmarks: pods labelled app=APP reach the destinations
// (minus the excluded CIDRs) through a gateway among the named nodes; no egressIP (the operator allocates one).
export interface EgressPolicyFixture {
  name: string;
  /** The app label of the selected pods. */
  app: string;
  destinations: string[];
  excluded?: string[];
  /** Gateway candidates by node name: one (matchLabels) or several (matchExpressions In, the first by name wins). */
  gateways: string[];
}

export function egressPolicyYaml(f: EgressPolicyFixture): string {
  const list = (xs: string[]): string => xs.map((x) => `  - ${x}\n`).join('');
  const nodes =
    f.gateways.length === 1
      ? `      matchLabels:\n        kubernetes.io/hostname: ${f.gateways[0]}\n`
      : `      matchExpressions:\n      - key: kubernetes.io/hostname\n        operator: In\n        values: [${f.gateways.join(', ')}]\n`;
  return (
    `apiVersion: tendril.io/v2\nkind: TendrilEgressGatewayPolicy\nmetadata:\n  name: ${f.name}\nspec:\n` +
    `  selectors:\n  - podSelector:\n      matchLabels:\n        app: ${f.app}\n` +
    `  destinationCIDRs:\n${list(f.destinations)}` +
    (f.excluded?.length ? `  excludedCIDRs:\n${list(f.excluded)}` : '') +
    `  egressGateway:\n    nodeSelector:\n${nodes}`
  );
}
