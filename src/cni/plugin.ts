// The CNI verbs as the agent runs them: one dispatch over ADD, DEL, CHECK, STATUS, GC and VERSION.
import type { NamedPort } from '../store/types.js';
import type { Logger } from '../util/log.js';
import {
  assertPodNetns,
  checkPodInterface,
  createPodInterface,
  openPodNetns,
  removePodInterface,
} from '../datapath/index.js';
import { asCniError, CniCode, CniError, isSupportedVersion, LATEST_VERSION, SUPPORTED_VERSIONS, type CniVersion } from './errors.js';
import { hostIfName } from './names.js';
import { parseCniCall, peekCniVersion, VALID_ATTACHMENTS_KEY, type CniCall } from './parse.js';
import { formatResult, parseResult, podResult } from './result.js';
import { clockFromShim, CniTimings, PhaseClock, type Lap } from './timings.js';
import { UndoList, type UndoFailure } from './undo.js';

/**
 * What the agent provides to the CNI verbs: readiness, IPAM and the endpoint registry. Errors it throws with a
 * `code` of TENDRIL_ERR_IPAM_EXHAUSTED / _OUT_OF_RANGE / _CONFLICT, TENDRIL_ERR_NOT_READY or
 * TENDRIL_ERR_STORE_UNAVAILABLE reach the runtime as CNI codes 100 / 101 / 102 / 11 / 11 (errors.ts).
 */
export interface CniBackend {
  /** limited: existing pods may have limited connectivity meanwhile (STATUS answers 51 instead of 50). */
  status(): { ready: boolean; reason?: string; limited?: boolean };
  /** router = the pod's gateway (tendril_host's IP). */
  netConfig(): { routerIP: string; mtu: number };
  /** The node's pod address pool, once it has one. */
  pool(): { cidr: string; free: number } | undefined;
  /** Allocates `ip` when given (a static address), else the next free one, recorded for (containerId, ifname). */
  allocateIP(r: IpRequest): Promise<string>;
  /** No error when `ip` is not allocated; with `attachment`, an address now allocated to another one stays. */
  releaseIP(ip: string, attachment?: { containerId: string; ifname: string }): Promise<void>;
  /** Addresses allocated for an attachment, whatever state its ADD reached (an endpoint or not). */
  attachmentIPs(containerId: string, ifname: string): string[];
  /** Every address allocated for a CNI attachment. */
  listAttachmentIPs(): { ip: string; containerId: string; ifname: string }[];
  /** `clock` laps the backend's own steps (identity, datapath, persistence). */
  createEndpoint(r: EndpointRequest, clock?: Lap): Promise<{ id: number }>;
  findEndpoint(containerId: string, ifname: string): EndpointRef | undefined;
  /** No error when the endpoint is already gone. */
  deleteEndpoint(id: number): Promise<void>;
  listEndpoints(): { id: number; containerId: string; ifname: string; ip: string }[];
  /**
   * An ADD or DEL starts; the returned function is called when it has answered. Lets the node put off background
   * kernel work that would compete with the call (the switch of bridged pods to tcx).
   */
  callStarted?(verb: 'ADD' | 'DEL'): () => void;
}

export interface IpRequest {
  /** "namespace/pod" when CNI_ARGS names the pod, else the container ID. */
  owner: string;
  containerId: string;
  ifname: string;
  /** A static address the runtime asked for. */
  ip?: string;
  /** The pod, when CNI_ARGS names it, and its annotations (the IP pool it asks for). */
  namespace?: string;
  podName?: string;
  annotations?: Record<string, string>;
}

export interface EndpointRequest {
  containerId: string;
  ifname: string;
  podIfName: string;
  hostIfName: string;
  hostIfindex: number;
  hostMac: string;
  podMac: string;
  ip: string;
  netnsPath: string;
  namespace?: string;
  podName?: string;
  labels?: Record<string, string>;
  namedPorts?: NamedPort[];
  /** Kubernetes service account; the agent defaults it to "default". */
  serviceAccount?: string;
}

export interface EndpointRef {
  id: number;
  ip: string;
  hostIfName: string;
  netnsPath: string;
}

/** What the shim prints and how it exits. */
export interface CniResponse {
  exitCode: number;
  stdout: string;
  /** CNI error code when exitCode != 0 (lets the HTTP layer pick a status). */
  cniCode?: number;
}

export class CniHandler {
  private readonly backend: CniBackend;
  private readonly log: Logger | undefined;
  /**
   * Calls for one container run one after another: a DEL must not overtake its ADD, and a second attachment's
   * ADD must find the first one's interface and routes in place (and be refused), not race it to the default route.
   */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Per-phase timings of the last calls of each verb (status --verbose). */
  readonly timings = new CniTimings();

  constructor(backend: CniBackend, log?: Logger) {
    this.backend = backend;
    this.log = log;
  }

  /** Parses a forwarded call and runs it; every failure becomes CNI error JSON. The clock starts when the shim did. */
  async handleRaw(headers: Record<string, string | undefined>, body: string, clock = clockFromShim(headers)): Promise<CniResponse> {
    let call: CniCall;
    try {
      call = parseCniCall(headers, body);
    } catch (err) {
      const e = asCniError(err);
      this.log?.warn({ code: e.code, err: e.message }, 'CNI call rejected');
      return errorResponse(e, peekCniVersion(body));
    }
    clock.lap('parse');
    return this.handle(call, clock);
  }

  /** `clock` started when the call arrived; its phases are logged (debug) and kept for status --verbose. */
  async handle(call: CniCall, clock = new PhaseClock()): Promise<CniResponse> {
    this.timings.begin(call.command);
    const done = call.command === 'ADD' || call.command === 'DEL' ? this.backend.callStarted?.(call.command) : undefined;
    try {
      const out = await this.dispatch(call, clock);
      if (call.command === 'ADD' || call.command === 'DEL') this.timings.record(call.command, clock);
      this.log?.info(
        { cmd: call.command, containerId: call.containerId, ifname: call.ifname, ms: round(clock.total()) },
        `CNI ${call.command} done`,
      );
      this.log?.debug({ cmd: call.command, containerId: call.containerId, phases: clock.rounded() }, `CNI ${call.command} timings`);
      return out;
    } catch (err) {
      const e = asCniError(err);
      this.log?.warn(
        { cmd: call.command, containerId: call.containerId, code: e.code, err: e.message, details: e.details, ms: round(clock.total()), phases: clock.rounded() },
        `CNI ${call.command} failed`,
      );
      return errorResponse(e, call.config.cniVersion);
    } finally {
      done?.();
      this.timings.end(call.command);
    }
  }

  private dispatch(call: CniCall, clock: PhaseClock): Promise<CniResponse> {
    // 'queue': waiting behind an earlier call for the same attachment.
    switch (call.command) {
      case 'ADD':
        return this.serialize(call, () => (clock.lap('queue'), this.add(call, clock)));
      case 'DEL':
        return this.serialize(call, () => (clock.lap('queue'), this.del(call, clock)));
      case 'CHECK':
        return this.serialize(call, () => this.check(call));
      case 'STATUS':
        return Promise.resolve(this.status());
      case 'GC':
        return this.gc(call);
      case 'VERSION':
        return Promise.resolve(ok(versionAnswer(call.config.cniVersion)));
    }
  }

  /**
   * One sandbox, one attachment: a second CNI_IFNAME for a container that has one (or a namespace another
   * network already routes) is refused with 103 before anything is touched. Supporting it would need a second
   * default route, per-interface source routing and an endpoint per interface with its own identity; nothing in
   * Tendril's datapath or policy model asks for that.
   */
  private async add(call: CniCall, clock: PhaseClock): Promise<CniResponse> {
    const { containerId, ifname } = call;
    const st = this.backend.status();
    if (!st.ready) throw notReady(CniCode.TRY_AGAIN_LATER, st.reason);
    if (this.backend.findEndpoint(containerId, ifname)) {
      throw new CniError(CniCode.INTERNAL, `Cannot add "${ifname}" to container "${containerId}": it is already attached`, {
        details: 'the runtime must DEL an attachment before adding it again',
      });
    }
    const other = this.backend.listEndpoints().find((e) => e.containerId === containerId);
    if (other) {
      throw new CniError(
        CniCode.SANDBOX_TAKEN,
        `Cannot add "${ifname}" to container "${containerId}": it already has the Tendril interface "${other.ifname}" (${other.ip})`,
        { details: 'Tendril gives a sandbox exactly one interface' },
      );
    }
    const net = this.backend.netConfig();
    const mtu = call.config.mtu ?? net.mtu;
    const hostName = hostIfName(containerId, ifname);
    const pod = podIdentity(call);

    const undo = new UndoList();
    // Opened and vetted before anything is allocated: a bad netns, or the node's own, costs nothing to undo.
    const ns = openPodNetns(call.netns);
    try {
      assertPodNetns(ns);
      clock.lap('netns');

      const ipReq: IpRequest = { owner: pod.owner, containerId, ifname };
      if (call.staticIP !== undefined) ipReq.ip = call.staticIP;
      if (pod.namespace !== undefined) ipReq.namespace = pod.namespace;
      if (pod.podName !== undefined) ipReq.podName = pod.podName;
      if (call.annotations !== undefined) ipReq.annotations = call.annotations;
      const ip = await this.backend.allocateIP(ipReq);
      undo.push(`IP ${ip}`, () => this.backend.releaseIP(ip));
      clock.lap('ipam');

      const link = await createPodInterface({ netns: ns, netnsPath: call.netns, hostIfName: hostName, podIfName: ifname, ip, routerIP: net.routerIP, mtu });
      clock.lap('interface');
      undo.push(`veth "${hostName}"`, () => removePodInterface(call.netns, ifname, hostName));

      const req: EndpointRequest = {
        containerId,
        ifname,
        podIfName: ifname,
        hostIfName: hostName,
        hostIfindex: link.hostIfindex,
        hostMac: link.hostMac,
        podMac: link.podMac,
        ip,
        netnsPath: call.netns,
        labels: call.labels,
        namedPorts: call.namedPorts,
      };
      if (call.serviceAccount !== undefined) req.serviceAccount = call.serviceAccount;
      if (pod.namespace !== undefined) req.namespace = pod.namespace;
      if (pod.podName !== undefined) req.podName = pod.podName;
      const ep = await this.backend.createEndpoint(req, clock);
      undo.push(`endpoint ${ep.id}`, () => this.backend.deleteEndpoint(ep.id));

      const result = podResult({
        hostIfName: hostName,
        hostMac: link.hostMac,
        podIfName: ifname,
        podMac: link.podMac,
        netnsPath: call.netns,
        ip,
        routerIP: net.routerIP,
        mtu,
      });
      const stdout = JSON.stringify(formatResult(result, call.config.cniVersion));
      undo.commit();
      clock.lap('result');
      return ok(stdout);
    } catch (err) {
      throw withUndoFailures(asCniError(err), await undo.unwind());
    } finally {
      ns.close();
    }
  }

  /** Removes whatever of the attachment still exists; what is already gone is success. */
  private async del(call: CniCall, clock: PhaseClock): Promise<CniResponse> {
    await this.remove(call.containerId, call.ifname, call.netns, clock);
    return ok('');
  }

  /**
   * Removes an attachment by container ID and ifname, whatever state it is in: a finished one (endpoint), or
   * the remains of an ADD that never finished (a veth, an address without endpoint). A netns that is the
   * node's own is never entered (the datapath refuses to delete node interfaces).
   */
  private async remove(containerId: string, ifname: string, netnsPath: string, clock?: Lap): Promise<void> {
    const ep = this.backend.findEndpoint(containerId, ifname);
    const failures: UndoFailure[] = [];
    const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
      } catch (error) {
        failures.push({ what, error });
      }
    };
    // Interface, endpoint, IP: each step only after the previous one succeeded, so that a failed DEL leaves
    // the endpoint record in place and the runtime's retry finds everything it still has to remove. The IP
    // goes last, never to another pod while this one may still hold it.
    const hostName = ep?.hostIfName ?? hostIfName(containerId, ifname);
    // Without an endpoint record the pod side is not entered: deleting the host end takes a veth's pod end
    // with it, and a link named ifname there may be another network's (a refused ADD is followed by a DEL).
    const podNetns = ep ? netnsPath || ep.netnsPath : '';
    await attempt(`veth "${hostName}"`, () => removePodInterface(podNetns, ifname, hostName));
    clock?.lap('interface');
    if (ep && failures.length === 0) await attempt(`endpoint ${ep.id}`, () => this.backend.deleteEndpoint(ep.id));
    clock?.lap('endpoint');
    if (failures.length === 0) {
      const ips = new Set(this.backend.attachmentIPs(containerId, ifname));
      if (ep) ips.add(ep.ip);
      for (const ip of ips) await attempt(`IP ${ip}`, () => this.backend.releaseIP(ip, { containerId, ifname }));
    }
    clock?.lap('ipam');
    const first = failures[0];
    if (first) {
      const e = asCniError(first.error);
      throw new CniError(e.code, `Cannot remove "${ifname}" of container "${containerId}": ${describe(failures)}`, {
        cause: first.error,
      });
    }
  }

  private async check(call: CniCall): Promise<CniResponse> {
    const { containerId, ifname } = call;
    const ep = this.backend.findEndpoint(containerId, ifname);
    if (!ep) {
      throw new CniError(CniCode.UNKNOWN_CONTAINER, `container "${containerId}" has no Tendril interface "${ifname}"`);
    }
    const prev = parseResult(call.config.prevResult ?? {});
    const want = `${ep.ip}/32`;
    if (!prev.ips.some((ip) => ip.address === want)) {
      throw new CniError(CniCode.INTERNAL, `CHECK failed for container "${containerId}": prevResult does not hold ${want}`, {
        details: `prevResult ips: ${JSON.stringify(prev.ips.map((ip) => ip.address))}`,
      });
    }
    const held = this.backend.attachmentIPs(containerId, ifname);
    if (!held.includes(ep.ip)) {
      throw new CniError(CniCode.INTERNAL, `CHECK failed for container "${containerId}": ${ep.ip} is no longer allocated to it`, {
        details: held.length > 0 ? `IPAM holds ${held.join(', ')} for it` : 'IPAM holds no address for it',
      });
    }
    const net = this.backend.netConfig();
    await checkPodInterface({
      netnsPath: call.netns,
      podIfName: ifname,
      hostIfName: ep.hostIfName,
      ip: ep.ip,
      routerIP: net.routerIP,
    });
    return ok('');
  }

  /** 0 only when an ADD would succeed now; 50 when it could not; 51 when existing pods may suffer too. */
  private status(): CniResponse {
    const st = this.backend.status();
    const code = st.limited ? CniCode.LIMITED_CONNECTIVITY : CniCode.NOT_AVAILABLE;
    if (!st.ready) throw notReady(code, st.reason);
    const pool = this.backend.pool();
    if (!pool) throw notReady(code, 'the node has no pod address pool yet');
    if (pool.free <= 0) {
      throw new CniError(code, 'Tendril cannot add pods: the node\'s pod address pool is exhausted', {
        details: `pod CIDR ${pool.cidr} has no free address`,
      });
    }
    if (st.limited) {
      throw new CniError(code, 'Existing pods may have limited connectivity', st.reason === undefined ? {} : { details: st.reason });
    }
    return ok('');
  }

  /** Removes every endpoint the runtime no longer lists as a valid attachment. */
  private async gc(call: CniCall): Promise<CniResponse> {
    const valid = new Set((call.config[VALID_ATTACHMENTS_KEY] ?? []).map((a) => attachmentKey(a.containerID, a.ifname)));
    const failures: UndoFailure[] = [];
    for (const ep of this.backend.listEndpoints()) {
      if (valid.has(attachmentKey(ep.containerId, ep.ifname))) continue;
      const target = { ...call, containerId: ep.containerId, ifname: ep.ifname };
      try {
        await this.serialize(target, () => this.remove(ep.containerId, ep.ifname, ''));
        this.log?.info({ containerId: ep.containerId, ifname: ep.ifname, ip: ep.ip }, 'GC removed stale attachment');
      } catch (error) {
        failures.push({ what: `attachment ${ep.containerId}/${ep.ifname}`, error });
      }
    }
    // Addresses of ADDs that never finished (no endpoint): released by the same removal, veth and all.
    for (const a of this.backend.listAttachmentIPs()) {
      if (valid.has(attachmentKey(a.containerId, a.ifname)) || this.backend.findEndpoint(a.containerId, a.ifname)) continue;
      const target = { containerId: a.containerId, ifname: a.ifname };
      try {
        await this.serialize(target, () => this.remove(a.containerId, a.ifname, ''));
        this.log?.info({ containerId: a.containerId, ifname: a.ifname, ip: a.ip }, 'GC released the address of an unfinished attachment');
      } catch (error) {
        failures.push({ what: `address ${a.ip} of ${a.containerId}/${a.ifname}`, error });
      }
    }
    if (failures.length > 0) {
      throw new CniError(asCniError(failures[0]!.error).code, `GC could not remove ${failures.length} stale attachment(s)`, {
        details: describe(failures),
      });
    }
    return ok('');
  }

  private async serialize<T>(call: Pick<CniCall, 'containerId' | 'ifname'>, fn: () => Promise<T>): Promise<T> {
    const key = call.containerId;
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }
}

function attachmentKey(containerId: string, ifname: string): string {
  return `${containerId}\u0000${ifname}`;
}

/** Pod name and IPAM owner from CNI_ARGS (set by Kubernetes runtimes), else the container ID. */
function podIdentity(call: CniCall): { owner: string; namespace?: string; podName?: string } {
  const namespace = call.args['K8S_POD_NAMESPACE'];
  const podName = call.args['K8S_POD_NAME'];
  if (namespace && podName) return { owner: `${namespace}/${podName}`, namespace, podName };
  return { owner: call.containerId };
}

function ok(stdout: string): CniResponse {
  return { exitCode: 0, stdout };
}

function errorResponse(e: CniError, cniVersion: string | undefined): CniResponse {
  return { exitCode: 1, stdout: JSON.stringify(e.toJSON(cniVersion as CniVersion | undefined)), cniCode: e.code };
}

/** VERSION's answer, in the caller's spec version when it is one we speak (the shim answers the same). */
function versionAnswer(callerVersion: unknown): string {
  const cniVersion = isSupportedVersion(callerVersion) ? callerVersion : LATEST_VERSION;
  return JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS });
}

function notReady(
  code: typeof CniCode.TRY_AGAIN_LATER | typeof CniCode.NOT_AVAILABLE | typeof CniCode.LIMITED_CONNECTIVITY,
  reason?: string,
): CniError {
  return new CniError(code, 'Tendril agent is not ready', reason === undefined ? {} : { details: reason });
}

function describe(failures: UndoFailure[]): string {
  return failures
    .map((f) => `${f.what}: ${f.error instanceof Error ? f.error.message : String(f.error)}`)
    .join('; ');
}

/** The original error, with what could not be undone appended (so the operator knows what leaked). */
function withUndoFailures(e: CniError, failures: UndoFailure[]): CniError {
  if (failures.length === 0) return e;
  const undo = `undo failed: ${describe(failures)}`;
  return new CniError(e.code, e.message, { details: e.details ? `${e.details}; ${undo}` : undo, cause: e });
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
