// Turns one forwarded CNI invocation (X-Cni-* headers + stdin config) into a validated CniCall.
import { labelKeyProblem, labelValueProblem } from '../policy/index.js';
import type { NamedPort } from '../store/types.js';
import { formatIPv4, isIPv4, parseIPv4 } from '../util/ip.js';
import {
  CniCode,
  CniError,
  compareVersions,
  isSupportedVersion,
  SUPPORTED_VERSIONS,
  type CniVersion,
} from './errors.js';

export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/** Key of the GC verb's list of attachments that must be kept (CNI 1.1). */
export const VALID_ATTACHMENTS_KEY = 'cni.dev/valid-attachments';

export interface Attachment {
  containerID: string;
  ifname: string;
}

/** The network configuration a runtime passes on stdin (after conflist expansion). */
export interface NetConf {
  cniVersion: CniVersion;
  name: string;
  type: string;
  /** Where the shim finds the agent; the agent writes it into its conflist. */
  'agent-socket'?: string;
  mtu?: number;
  args?: Record<string, unknown>;
  runtimeConfig?: Record<string, unknown>;
  prevResult?: Record<string, unknown>;
  [VALID_ATTACHMENTS_KEY]?: Attachment[];
  [key: string]: unknown;
}

export interface CniCall {
  command: CniCommand;
  /** '' when the verb does not take one (STATUS, GC, VERSION). */
  containerId: string;
  /** '' when not given (allowed for DEL, STATUS, GC, VERSION). */
  netns: string;
  /** '' when the verb does not take one. */
  ifname: string;
  /** CNI_ARGS "K=V;K2=V2" as a map. */
  args: Record<string, string>;
  /** CNI_PATH split on ':'. */
  path: string[];
  config: NetConf;
  /** Pod labels from the config's args.tendril.labels (CNI "args" convention). */
  labels: Record<string, string>;
  /** Named container ports from args.tendril.ports ([{"name", "containerPort", "protocol"}], Kubernetes' shape). */
  namedPorts: NamedPort[];
  /** The static address asked for (args.cni.ips, runtimeConfig.ips or CNI_ARGS IP=), if any. */
  staticIP?: string;
  /** The pod's service account from args.tendril.serviceAccount (the runtime's word, not a pod label). */
  serviceAccount?: string;
  /** Pod annotations from args.tendril.annotations ({"ipam.tendril.io/ip-pool": "blue"}), as runtimes pass labels. */
  annotations?: Record<string, string>;
}

const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** Linux IFNAMSIZ is 16 including the terminating NUL. */
const IFNAME_MAX = 15;

/** Header values arrive percent-encoded where they held '%', control or non-ASCII bytes (see the shim). */
function header(headers: Record<string, string | undefined>, name: string): string | undefined {
  const want = name.toLowerCase();
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== want || v === undefined) continue;
    try {
      return decodeURIComponent(v);
    } catch {
      throw new CniError(CniCode.INVALID_ENV, `invalid environment: ${envName(name)} is not valid UTF-8`, {
        details: `header ${name}: ${JSON.stringify(v)}`,
      });
    }
  }
  return undefined;
}

function envName(headerName: string): string {
  return 'CNI_' + headerName.slice('X-Cni-'.length).toUpperCase();
}

function invalidEnv(msg: string): CniError {
  return new CniError(CniCode.INVALID_ENV, `invalid environment: ${msg}`);
}

function invalidConfig(msg: string): CniError {
  return new CniError(CniCode.INVALID_CONFIG, `invalid network config: ${msg}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** CNI_ARGS: "K=V;K2=V2"; an empty string is no arguments. */
export function parseCniArgs(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (text === '') return out;
  for (const pair of text.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw invalidEnv(`CNI_ARGS entry "${pair}" is not KEY=VALUE`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

/** The spec's container ID rule: alphanumeric first, then alphanumerics, '_', '.', '-'. */
export function validateContainerId(id: string): void {
  if (id === '') throw invalidEnv('CNI_CONTAINERID is empty');
  if (!NAME_RE.test(id)) {
    throw invalidEnv(`CNI_CONTAINERID "${id}" must start with a letter or digit and contain only letters, digits, "_", "." and "-"`);
  }
}

/** Interface names the kernel accepts: 1-15 bytes, not "." or "..", no '/', ':' or whitespace. */
export function validateIfname(name: string): void {
  if (name === '') throw invalidEnv('CNI_IFNAME is empty');
  if (Buffer.byteLength(name) > IFNAME_MAX) {
    throw invalidEnv(`CNI_IFNAME "${name}" is longer than ${IFNAME_MAX} bytes`);
  }
  if (name === '.' || name === '..') throw invalidEnv(`CNI_IFNAME "${name}" is not a valid interface name`);
  if (/[/:\s]/.test(name)) throw invalidEnv(`CNI_IFNAME "${name}" must not contain "/", ":" or whitespace`);
}

/** Extracts the config's cniVersion without validating anything else (for error replies). */
export function peekCniVersion(body: string): string | undefined {
  try {
    const v: unknown = JSON.parse(body);
    if (isObject(v) && typeof v['cniVersion'] === 'string') return v['cniVersion'];
  } catch {
    /* not JSON: the caller answers in the latest version */
  }
  return undefined;
}

/** Which environment variables a verb needs (spec: "Required environment parameters"). */
const REQUIRED_ENV: Record<CniCommand, ('containerId' | 'netns' | 'ifname')[]> = {
  ADD: ['containerId', 'netns', 'ifname'],
  CHECK: ['containerId', 'netns', 'ifname'],
  DEL: ['containerId', 'ifname'],
  STATUS: [],
  GC: [],
  VERSION: [],
};
const ENV_OF = { containerId: 'CNI_CONTAINERID', netns: 'CNI_NETNS', ifname: 'CNI_IFNAME' } as const;

/** Oldest spec version that defines each verb. */
const SINCE: Partial<Record<CniCommand, CniVersion>> = { CHECK: '0.4.0', STATUS: '1.1.0', GC: '1.1.0' };

export function parseCniCall(headers: Record<string, string | undefined>, body: string): CniCall {
  const command = header(headers, 'X-Cni-Command');
  if (command === undefined || command === '') throw invalidEnv('CNI_COMMAND is not set');
  if (!(CNI_COMMANDS as readonly string[]).includes(command)) {
    throw invalidEnv(`unknown CNI_COMMAND "${command}" (expected one of ${CNI_COMMANDS.join(', ')})`);
  }
  const cmd = command as CniCommand;

  const env = {
    containerId: header(headers, 'X-Cni-Containerid') ?? '',
    netns: header(headers, 'X-Cni-Netns') ?? '',
    ifname: header(headers, 'X-Cni-Ifname') ?? '',
  };
  for (const key of REQUIRED_ENV[cmd]) {
    if (env[key] === '') throw invalidEnv(`${ENV_OF[key]} is not set (required for ${cmd})`);
  }
  if (env.containerId !== '') validateContainerId(env.containerId);
  if (env.ifname !== '') validateIfname(env.ifname);
  if (env.netns !== '' && !env.netns.startsWith('/')) {
    throw new CniError(CniCode.INVALID_NETNS, `invalid network namespace "${env.netns}": not an absolute path`);
  }
  const args = parseCniArgs(header(headers, 'X-Cni-Args') ?? '');
  const cniPath = header(headers, 'X-Cni-Path') ?? '';
  const path = cniPath === '' ? [] : cniPath.split(':').filter((p) => p !== '');

  const config = parseNetConf(body, cmd);
  const labels = parseLabels(config);
  const namedPorts = parsePorts(config);
  const serviceAccount = parseServiceAccount(config);
  const call: CniCall = { command: cmd, ...env, args, path, config, labels, namedPorts, ...(serviceAccount !== undefined ? { serviceAccount } : {}) };
  const annotations = parseAnnotations(config);
  if (annotations !== undefined) call.annotations = annotations;
  if (cmd === 'ADD') {
    const staticIP = parseStaticIP(config, args);
    if (staticIP !== undefined) call.staticIP = staticIP;
  }
  return call;
}

/**
 * The static address of an ADD, from the conventions' three places: `args.cni.ips` (config args), the "ips"
 * capability (`runtimeConfig.ips`) and `CNI_ARGS IP=` (host-local's). Addresses may carry a prefix length (the
 * pod gets a /32 whatever it says). Tendril gives a pod one IPv4 address: more than one, or IPv6, is refused.
 */
export function parseStaticIP(conf: NetConf, args: Record<string, string>): string | undefined {
  const asked: { ip: string; from: string }[] = [];
  const take = (v: unknown, from: string): void => {
    if (v === undefined) return;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalidConfig(`${from} must be an array of IP address strings`);
    for (const x of v as string[]) asked.push({ ip: x, from });
  };
  const cni = conf.args?.['cni'];
  if (isObject(cni)) take(cni['ips'], '"args.cni.ips"');
  take(conf.runtimeConfig?.['ips'], '"runtimeConfig.ips"');
  if (args['IP'] !== undefined) {
    for (const x of args['IP'].split(',')) asked.push({ ip: x, from: 'CNI_ARGS IP' });
  }
  const ips = new Set<string>();
  for (const { ip, from } of asked) {
    const slash = ip.indexOf('/');
    const addr = slash < 0 ? ip : ip.slice(0, slash);
    const prefix = slash < 0 ? undefined : ip.slice(slash + 1);
    if (!isIPv4(addr) || (prefix !== undefined && !/^(\d|[12]\d|3[0-2])$/.test(prefix))) {
      const why = addr.includes(':') ? 'the cluster is IPv4-only' : 'expected an IPv4 address such as 10.0.1.5';
      throw invalidConfig(`${from} asks for ${JSON.stringify(ip)}: ${why}`);
    }
    ips.add(formatIPv4(parseIPv4(addr)));
  }
  if (ips.size > 1) {
    throw invalidConfig(`the ADD asks for ${ips.size} static addresses (${[...ips].join(', ')}): Tendril gives a pod exactly one IPv4 address`);
  }
  return [...ips][0];
}

function parseNetConf(body: string, cmd: CniCommand): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new CniError(CniCode.DECODE_FAILURE, `decoding failure: network config on stdin is not JSON: ${why}`, {
      cause: err,
    });
  }
  if (!isObject(raw)) {
    throw new CniError(CniCode.DECODE_FAILURE, 'decoding failure: network config on stdin is not a JSON object');
  }

  const version = raw['cniVersion'];
  if (version === undefined) throw invalidConfig('"cniVersion" is missing');
  if (typeof version !== 'string') throw invalidConfig('"cniVersion" must be a string');
  if (!isSupportedVersion(version)) {
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      `incompatible CNI version: "${version}" is not supported (supported: ${SUPPORTED_VERSIONS.join(', ')})`,
    );
  }
  const since = SINCE[cmd];
  if (since !== undefined && compareVersions(version, since) < 0) {
    throw new CniError(
      CniCode.INCOMPATIBLE_VERSION,
      `incompatible CNI version: ${cmd} needs cniVersion ${since} or later, the config says "${version}"`,
    );
  }
  // VERSION only needs the version; the other verbs need a complete config.
  if (cmd === 'VERSION') return { ...raw, cniVersion: version, name: str(raw, 'name') ?? '', type: str(raw, 'type') ?? '' };

  const name = requireString(raw, 'name');
  if (!NAME_RE.test(name)) {
    throw invalidConfig(`"name" "${name}" must start with a letter or digit and contain only letters, digits, "_", "." and "-"`);
  }
  const type = requireString(raw, 'type');
  const conf: NetConf = { ...raw, cniVersion: version, name, type };

  const socket = raw['agent-socket'];
  if (socket !== undefined && (typeof socket !== 'string' || socket === '')) {
    throw invalidConfig('"agent-socket" must be a non-empty string');
  }
  const mtu = raw['mtu'];
  if (mtu !== undefined && (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535)) {
    throw invalidConfig(`"mtu" must be an integer from 68 to 65535, got ${JSON.stringify(mtu)}`);
  }
  for (const key of ['args', 'runtimeConfig', 'prevResult'] as const) {
    if (raw[key] !== undefined && !isObject(raw[key])) throw invalidConfig(`"${key}" must be an object`);
  }
  if (cmd === 'ADD' && raw['prevResult'] !== undefined) {
    // Tendril creates the pod's interface, so it must be first in a chain; a prevResult means it is not.
    throw new CniError(
      CniCode.UNSUPPORTED_FIELD,
      'unsupported field in network config: "prevResult" (tendril must be the first plugin of the list)',
    );
  }
  if (cmd === 'CHECK' && raw['prevResult'] === undefined) throw invalidConfig('"prevResult" is required for CHECK');
  if (cmd === 'GC') {
    // libcni writes the list under both names (the spec once misnamed it, containernetworking/cni#1101).
    const list = raw[VALID_ATTACHMENTS_KEY] ?? raw['cni.dev/attachments'];
    conf[VALID_ATTACHMENTS_KEY] = parseAttachments(list);
  }
  return conf;
}

function str(raw: Record<string, unknown>, key: string): string | undefined {
  const v = raw[key];
  return typeof v === 'string' ? v : undefined;
}

function requireString(raw: Record<string, unknown>, key: string): string {
  const v = raw[key];
  if (v === undefined) throw invalidConfig(`"${key}" is missing`);
  if (typeof v !== 'string') throw invalidConfig(`"${key}" must be a string`);
  if (v === '') throw invalidConfig(`"${key}" is empty`);
  return v;
}

function parseAttachments(v: unknown): Attachment[] {
  // libcni sends null for an empty Go slice: no attachment is valid any more.
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalidConfig(`"${VALID_ATTACHMENTS_KEY}" must be an array`);
  return v.map((a: unknown, i) => {
    if (!isObject(a) || typeof a['containerID'] !== 'string' || typeof a['ifname'] !== 'string') {
      throw invalidConfig(`"${VALID_ATTACHMENTS_KEY}"[${i}] must be {"containerID": string, "ifname": string}`);
    }
    return { containerID: a['containerID'], ifname: a['ifname'] };
  });
}

const PORT_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

/**
 * Named container ports, `args.tendril.ports`: [{"name": "http", "containerPort": 80, "protocol": "TCP"}] — what a
 * pod spec declares and named ports in policies resolve against. Unnamed entries are allowed and ignored.
 */
function parsePorts(conf: NetConf): NamedPort[] {
  const tendril = conf.args?.['tendril'];
  if (!isObject(tendril) || tendril['ports'] === undefined) return [];
  const list = tendril['ports'];
  if (!Array.isArray(list)) throw invalidConfig('"args.tendril.ports" must be an array of {"name", "containerPort", "protocol"}');
  const out: NamedPort[] = [];
  list.forEach((p: unknown, i) => {
    const where = `"args.tendril.ports"[${i}]`;
    if (!isObject(p)) throw invalidConfig(`${where} must be an object`);
    const port = p['containerPort'];
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw invalidConfig(`${where}.containerPort must be an integer 1-65535`);
    const protocol = p['protocol'] ?? 'TCP';
    if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') throw invalidConfig(`${where}.protocol must be TCP, UDP or SCTP`);
    const name = p['name'];
    if (name === undefined) return;
    if (typeof name !== 'string' || !PORT_NAME_RE.test(name) || !/[a-z]/.test(name)) {
      throw invalidConfig(`${where}.name ${JSON.stringify(name)} is not a valid port name (1-15 lowercase letters, digits and "-", with a letter)`);
    }
    if (out.some((o) => o.name === name)) throw invalidConfig(`${where}.name "${name}" is declared twice`);
    out.push({ name, port, protocol });
  });
  return out;
}

/** args.tendril.serviceAccount: a Kubernetes object name (DNS subdomain), or undefined. */
function parseServiceAccount(conf: NetConf): string | undefined {
  const tendril = conf.args?.['tendril'];
  if (!isObject(tendril) || tendril['serviceAccount'] === undefined) return undefined;
  const sa = tendril['serviceAccount'];
  if (typeof sa !== 'string' || sa.length > 253 || !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(sa)) {
    throw invalidConfig(`"args.tendril.serviceAccount" ${JSON.stringify(sa)} is not a valid service account name (lower-case letters, digits, '-' and '.')`);
  }
  return sa;
}

/** Pod annotations from `args.tendril.annotations` (an object of strings), if given. */
function parseAnnotations(conf: NetConf): Record<string, string> | undefined {
  const tendril = conf.args?.['tendril'];
  if (!isObject(tendril) || tendril['annotations'] === undefined) return undefined;
  const a = tendril['annotations'];
  if (!isObject(a)) throw invalidConfig('"args.tendril.annotations" must be an object of strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(a)) {
    if (typeof v !== 'string') throw invalidConfig(`"args.tendril.annotations.${k}" must be a string`);
    const keyProblem = labelKeyProblem(k);
    if (keyProblem) throw invalidConfig(`Pod annotation key ${JSON.stringify(k)} is not a valid key: ${keyProblem}`);
    out[k] = v;
  }
  return out;
}

/**
 * Pod labels, from the CNI "args" conventions: `args.cni.labels` ([{"key": "app", "value": "curl"}], what runtimes
 * send) and `args.tendril.labels` ({"app": "curl"}); the latter wins on a clash.
 */
function parseLabels(conf: NetConf): Record<string, string> {
  const out: Record<string, string> = {};
  const cni = conf.args?.['cni'];
  if (cni !== undefined) {
    if (!isObject(cni)) throw invalidConfig('"args.cni" must be an object');
    const list = cni['labels'];
    if (list !== undefined) {
      if (!Array.isArray(list)) throw invalidConfig('"args.cni.labels" must be an array of {"key", "value"}');
      list.forEach((l: unknown, i) => {
        if (!isObject(l) || typeof l['key'] !== 'string' || typeof l['value'] !== 'string') {
          throw invalidConfig(`"args.cni.labels"[${i}] must be {"key": string, "value": string}`);
        }
        out[l['key']] = l['value'];
      });
    }
  }
  const tendril = conf.args?.['tendril'];
  if (tendril !== undefined) {
    if (!isObject(tendril)) throw invalidConfig('"args.tendril" must be an object');
    const labels = tendril['labels'];
    if (labels !== undefined) {
      if (!isObject(labels)) throw invalidConfig('"args.tendril.labels" must be an object of strings');
      for (const [k, v] of Object.entries(labels)) {
        if (typeof v !== 'string') throw invalidConfig(`"args.tendril.labels.${k}" must be a string`);
        out[k] = v;
      }
    }
  }
  // Kubernetes' label syntax: labels become security labels, joined and compared as text.
  for (const [k, v] of Object.entries(out)) {
    const keyProblem = labelKeyProblem(k);
    if (keyProblem) throw invalidConfig(`Pod label key ${JSON.stringify(k)} is not a valid label key: ${keyProblem}`);
    const valueProblem = labelValueProblem(v);
    if (valueProblem) throw invalidConfig(`Pod label "${k}" has an invalid value ${JSON.stringify(v)}: ${valueProblem}`);
  }
  return out;
}
