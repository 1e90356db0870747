// Lab IPAM operations: stopping and starting the operator alone (to see nodes ride out its absence), and giving
// a node new pod CIDRs in --ipam kubernetes mode.
import { LabError } from './errors.js';
import { findNode, loadLab, saveLab, startOperator } from './lab.js';
import { setNodePodCidrs } from './ipam-args.js';
import { stopProcesses } from './procs.js';

/** Stops the lab's operator; the cluster store must live elsewhere (--store etcd), since the local one is hosted by it. */
export async function labOperatorStop(lab: string): Promise<void> {
  const st = loadLab(lab);
  if (st.store !== 'etcd') {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Lab "${lab}" hosts its local store in the operator: stopping it stops the store too (bring the lab up with --store etcd)`);
  }
  if (st.operatorPid) await stopProcesses([st.operatorPid]);
  st.operatorPid = 0;
  saveLab(st);
}

/** Starts the lab's operator again (no-op when it runs). */
export async function labOperatorStart(lab: string): Promise<number> {
  const st = loadLab(lab);
  if (st.operatorPid) return st.operatorPid;
  st.operatorPid = await startOperator(st);
  saveLab(st);
  return st.operatorPid;
}

/** --ipam kubernetes: gives a node of the lab new pod CIDRs (what kube-controller-manager would write). */
export async function labNodePodCidrs(lab: string, node: string, podCIDRs: string[]): Promise<void> {
  const st = loadLab(lab);
  findNode(st, node);
  if (st.ipam?.mode !== 'kubernetes') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Lab "${lab}" uses cluster-pool IPAM: the operator assigns pod CIDRs`);
  await setNodePodCidrs(lab, node, podCIDRs);
}
