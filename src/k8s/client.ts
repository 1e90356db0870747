// Connecting to the apiserver: a kubeconfig file (--k8s-kubeconfig) or the in-cluster service account.
import { KubeConfig, VersionApi } from '@kubernetes/client-node';
import { K8sError, messageOf } from './errors.js';

export interface K8sConnection {
  readonly kc: KubeConfig;
  /** Where the apiserver is, for status lines and logs. */
  readonly server: string;
}

/**
 * A kubeconfig path, or undefined for in-cluster config (KUBERNETES_SERVICE_HOST and the service account's token);
 * throws TENDRIL_ERR_K8S_CONFIG naming what is missing.
 */
export function connect(kubeconfig: string | undefined): K8sConnection {
  const kc = new KubeConfig();
  try {
    if (kubeconfig !== undefined) kc.loadFromFile(kubeconfig);
    else if (process.env['KUBERNETES_SERVICE_HOST']) kc.loadFromCluster();
    else throw new Error('no --k8s-kubeconfig given and KUBERNETES_SERVICE_HOST is not set (not in a pod)');
  } catch (err) {
    throw new K8sError('TENDRIL_ERR_K8S_CONFIG', `Cannot load Kubernetes config${kubeconfig !== undefined ? ` from ${kubeconfig}` : ''}: ${(err as Error).message}`, { cause: err });
  }
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new K8sError('TENDRIL_ERR_K8S_CONFIG', `Kubernetes config${kubeconfig !== undefined ? ` ${kubeconfig}` : ''} names no cluster server`);
  return { kc, server };
}

export interface K8sVersion {
  /** "1.32" */
  minor: string;
  /** "v1.32.13" (gitVersion as the apiserver reports it) */
  gitVersion: string;
}

/** GET /version. */
export async function serverVersion(conn: K8sConnection): Promise<K8sVersion> {
  try {
    const v = await conn.kc.makeApiClient(VersionApi).getCode();
    return { minor: `${v.major}.${v.minor.replace(/\D+$/, '')}`, gitVersion: v.gitVersion };
  } catch (err) {
    throw new K8sError('TENDRIL_ERR_K8S_UNAVAILABLE', `Kubernetes apiserver ${conn.server} unreachable: ${messageOf(err)}`, { cause: err });
  }
}
