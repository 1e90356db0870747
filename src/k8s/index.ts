// Kubernetes mode: the apiserver as Tendril's cluster store (CRDs + watched core resources), CRD installation.
export { connect, serverVersion, type K8sConnection, type K8sVersion } from './client.js';
export { KubernetesMode } from './mode.js';
export { formatKubernetesStatus, type KubernetesStatusView } from './status.js';
export { CRD_DIR, installCrds, loadCrds, waitEstablished, type CrdInstallResult } from './crds.js';
export { KubernetesStore } from './store.js';
export { BINDINGS, SOURCES, endpointObjectName } from './bindings.js';
export { K8sError, type K8sErrorCode } from './errors.js';
export { LeaseElector, type LeaseOptions } from './lease.js';
export { Rest, RestError } from './rest.js';
export { PodSource, type PodInfo } from './pods.js';
export { NodeCidrSource, nodePodCidrs } from './node-cidrs.js';
export { ServiceLbStatusWriter } from './service-lb-status.js';
