/**
 * The Node a sidecar presents to istiod. istiod parses the id (`sidecar~IP~POD.NS~NS.svc.DOMAIN`) to
 * find the proxy's namespace and pod, and reads its metadata (NodeMetadata) to decide what to generate:
 * labels select policies, INTERCEPTION_MODE shapes the listeners, ISTIO_VERSION gates features, and a
 * GENERATOR entry would switch istiod to a non-Envoy generator — so we never send one.
 *
 * Sources, later ones winning: the bootstrap's node, then the environment as pilot-agent reads it
 * (ISTIO_META_* strings, ISTIO_METAJSON_* JSON, POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT).
 */
import { ConfigError } from '../config/reader.js';

export interface NodeIdentity {
  readonly id: string;
  readonly cluster: string;
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly locality?: Readonly<Record<string, unknown>>;
  readonly user_agent_name: string;
  readonly user_agent_version: string;
  readonly client_features: readonly string[];
}

export type Env = Readonly<Record<string, string | undefined>>;

type Plain = Record<string, unknown>;
const isPlain = (v: unknown): v is Plain => typeof v === 'object' && v !== null && !Array.isArray(v);

const ID = /^(sidecar|router)~([^~]*)~([^~]*)~([^~]*)$/;

// istiod unmarshals these NodeMetadata fields into maps, lists and integers, not strings.
const MAP_KEYS = new Set(['LABELS', 'ANNOTATIONS']);
const JSON_KEYS = new Set(['PROXY_CONFIG', 'PILOT_SAN', 'PLATFORM_METADATA']);
const INT_KEYS = new Set(['ENVOY_PROMETHEUS_PORT', 'ENVOY_STATUS_PORT']);

function parseJson(envName: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ConfigError(envName, `not valid JSON: ${(e as Error).message}`);
  }
}

/** An ISTIO_META_ value, typed the way istiod reads that key. */
function metaValue(envName: string, key: string, text: string): unknown {
  if (MAP_KEYS.has(key)) {
    if (text.trim().startsWith('{')) return parseJson(envName, text);
    // The k=v,k=v form of the downward API's labels file, flattened.
    return Object.fromEntries(text.split(',').filter(Boolean).map((kv) => {
      const i = kv.indexOf('=');
      if (i <= 0) throw new ConfigError(envName, `expected JSON or key=value pairs, got "${kv}"`);
      return [kv.slice(0, i).trim(), kv.slice(i + 1).trim().replace(/^"(.*)"$/, '$1')];
    }));
  }
  if (JSON_KEYS.has(key) && /^\s*[[{]/.test(text)) return parseJson(envName, text);
  if (key === 'PILOT_SAN') return text.split(',').filter(Boolean);
  if (INT_KEYS.has(key) && /^\d+$/.test(text)) return Number(text);
  return text;
}

export interface NodeInputs {
  /** The bootstrap's `node` as written (snake or camelCase). */
  readonly rawNode: unknown;
  readonly env: Env;
  /** xsidecar's version, sent as user_agent_version. */
  readonly version: string;
}

export function buildNodeIdentity({ rawNode, env, version }: NodeInputs): { node: NodeIdentity; warnings: string[] } {
  const warnings: string[] = [];
  const raw: Plain = isPlain(rawNode) ? rawNode : {};
  const rawMeta = raw.metadata;
  if (rawMeta !== undefined && !isPlain(rawMeta)) throw new ConfigError('node.metadata', 'expected an object');
  const metadata: Plain = { ...(rawMeta ?? {}) };

  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue;
    if (name.startsWith('ISTIO_METAJSON_')) metadata[name.slice('ISTIO_METAJSON_'.length)] = parseJson(name, value);
    else if (name.startsWith('ISTIO_META_')) {
      const key = name.slice('ISTIO_META_'.length);
      metadata[key] = metaValue(name, key, value);
    }
  }
  if (env.POD_NAME) metadata.NAME = env.POD_NAME;
  if (env.POD_NAMESPACE) metadata.NAMESPACE = env.POD_NAMESPACE;
  if (env.SERVICE_ACCOUNT) metadata.SERVICE_ACCOUNT = env.SERVICE_ACCOUNT;
  if (env.INSTANCE_IP && env.ISTIO_META_INSTANCE_IPS === undefined) metadata.INSTANCE_IPS = env.INSTANCE_IP;
  if (Array.isArray(metadata.INSTANCE_IPS)) metadata.INSTANCE_IPS = metadata.INSTANCE_IPS.join(',');
  for (const key of MAP_KEYS) {
    if (metadata[key] !== undefined && !isPlain(metadata[key])) throw new ConfigError(`node.metadata.${key}`, 'expected an object of strings');
  }
  if ('GENERATOR' in metadata) {
    delete metadata.GENERATOR;
    warnings.push('node.metadata.GENERATOR: removed; it would make istiod generate config for a different kind of client');
  }

  const rawId = typeof raw.id === 'string' ? raw.id : '';
  const parsed = ID.exec(rawId);
  const [podPart, nsPart] = splitPodNs(parsed?.[3] ?? '');
  const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
  const ns = env.POD_NAMESPACE || str(metadata.NAMESPACE) || nsPart;
  const pod = env.POD_NAME || str(metadata.NAME) || podPart;
  const ip = env.INSTANCE_IP || str(metadata.INSTANCE_IPS)?.split(',')[0] || parsed?.[2] || undefined;
  const domain = domainOf(parsed?.[4], nsPart) ?? env.ISTIO_META_DNS_DOMAIN ?? 'cluster.local';

  let id = rawId;
  if (!parsed || env.POD_NAME || env.POD_NAMESPACE || env.INSTANCE_IP) {
    const missing = [!ip && 'INSTANCE_IP', !pod && 'POD_NAME', !ns && 'POD_NAMESPACE'].filter(Boolean);
    if (missing.length > 0) {
      throw new ConfigError('node.id', `istiod needs an id of the form sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.${domain}; got "${rawId}" and no ${missing.join(', ')} in the environment`);
    }
    id = `${parsed?.[1] ?? 'sidecar'}~${ip}~${pod}.${ns}~${ns}.svc.${domain}`;
  }
  // istiod falls back to the id for these, but policy selection and telemetry read them from metadata.
  metadata.NAMESPACE ??= ns;
  metadata.NAME ??= pod;
  metadata.INSTANCE_IPS ??= ip;
  metadata.CLUSTER_ID ??= 'Kubernetes';
  metadata.INTERCEPTION_MODE ??= 'REDIRECT';
  metadata.MESH_ID ??= domain;

  const labels = (metadata.LABELS ?? {}) as Plain;
  const workload = str(labels['service.istio.io/canonical-name']) ?? str(labels.app) ?? str(metadata.WORKLOAD_NAME) ?? pod;
  const cluster = str(raw.cluster) ?? `${workload}.${ns}`;
  const locality = isPlain(raw.locality) && Object.keys(raw.locality).length > 0 ? raw.locality : undefined;

  return {
    node: {
      id,
      cluster,
      metadata,
      ...(locality ? { locality } : {}),
      user_agent_name: 'xsidecar',
      user_agent_version: version,
      // Our load balancers do not apply EDS overprovisioning factors.
      client_features: ['envoy.lb.does_not_support_overprovisioning'],
    },
    warnings,
  };
}

/** "pod-abc.ns" -> ["pod-abc", "ns"]; pod names may hold dots, namespaces may not. */
function splitPodNs(s: string): [string | undefined, string | undefined] {
  const i = s.lastIndexOf('.');
  return i <= 0 ? [s || undefined, undefined] : [s.slice(0, i), s.slice(i + 1)];
}

/** "ns.svc.cluster.local" -> "cluster.local". */
function domainOf(suffix: string | undefined, ns: string | undefined): string | undefined {
  if (!suffix) return undefined;
  const prefix = `${ns ?? ''}.svc.`;
  if (ns && suffix.startsWith(prefix)) return suffix.slice(prefix.length) || undefined;
  const i = suffix.indexOf('.svc.');
  return i >= 0 ? suffix.slice(i + 5) : undefined;
}
