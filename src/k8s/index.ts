// Kubernetes mode: the apiserver as Tendril's cluster store (CRDs + watched core resources), CRD installation.
export { connect, serverVersion, statusLine, type K8sConnection, type K8sVersion } from './client.js';
export { CRD_DIR, installCrds, loadCrds, waitEstablished, type CrdInstallResult } from './crds.js';
export { KubernetesStore } from './store.js';
export { BINDINGS, SOURCES, endpointObjectName } from './bindings.js';
export { K8sError, type K8sErrorCode } from './errors.js';
