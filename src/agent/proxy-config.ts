/**
 * PROXY_CONFIG: the mesh's ProxyConfig (istio.mesh.v1alpha1) as the injector writes it into the pod, JSON in
 * proto3 form (camelCase; snake_case accepted too). We read the fields that change what a sidecar does and
 * name the ones we leave to Envoy, so an operator sees what is not honoured instead of guessing.
 */
import { ConfigError, parseDurationMs } from '../config/reader.js';

export type Env = Readonly<Record<string, string | undefined>>;

export interface ProxyConfig {
  /** istiod's xDS address, host:port (Istio's default: istiod.istio-system.svc:15012). */
  readonly discoveryAddress: string;
  /** Graceful drain on POST /drain (Envoy's --drain-time-s). */
  readonly drainMs: number;
  /** How long SIGTERM lets open connections finish. */
  readonly terminationDrainMs: number;
  readonly proxyMetadata: Readonly<Record<string, string>>;
  readonly statusPort: number;
  readonly adminPort: number;
  /** MUTUAL_TLS or NONE: the xDS connection's security when the port does not tell. */
  readonly controlPlaneAuthPolicy?: string;
  readonly interceptionMode: string;
  /** The JSON as given, forwarded to istiod in node metadata (PROXY_CONFIG), as pilot-agent does. */
  readonly raw: Readonly<Record<string, unknown>>;
  /** ProxyConfig fields present that only Envoy or pilot-agent's other parts act on. */
  readonly ignored: readonly string[];
  /** Fields that are not ProxyConfig's at all (a typo, or a newer Istio). */
  readonly unknown: readonly string[];
}

export const DEFAULT_DISCOVERY_ADDRESS = 'istiod.istio-system.svc:15012';

// Fields whose meaning belongs to Envoy, tracing or pilot-agent features we do not have.
const IGNORED = new Set([
  'configPath', 'binaryPath', 'serviceCluster', 'availabilityZone', 'connectTimeout', 'statsdUdpAddress', 'envoyMetricsService',
  'envoyAccessLogService', 'proxyBootstrapTemplatePath', 'customConfigFile', 'statNameLength', 'concurrency', 'tracing',
  'envoyStatsdAddress', 'extraStatTags', 'proxyStatsMatcher', 'runtimeValues', 'gatewayTopology', 'caCertificatesPem',
  'privateKeyProvider', 'image', 'readinessProbe', 'meshId', 'sds', 'fileFlushInterval', 'fileFlushMinSizeKb',
  'holdApplicationUntilProxyStarts', 'proxyHeaders', 'parentShutdownDuration',
]);
const KNOWN = new Set(['discoveryAddress', 'drainDuration', 'terminationDrainDuration', 'proxyMetadata', 'statusPort', 'proxyAdminPort', 'controlPlaneAuthPolicy', 'interceptionMode']);

const camel = (k: string) => k.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

function duration(raw: Record<string, unknown>, key: string, fallbackMs: number): number {
  const v = raw[key];
  if (v === undefined || v === null) return fallbackMs;
  const ms = parseDurationMs(v);
  if (ms === undefined || ms < 0) throw new ConfigError(`PROXY_CONFIG.${key}`, `expected a duration such as "5s", got ${JSON.stringify(v)}`);
  return ms;
}

function port(raw: Record<string, unknown>, key: string, fallback: number): number {
  const v = raw[key];
  if (v === undefined || v === null) return fallback;
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(`PROXY_CONFIG.${key}`, `expected a port 1..65535, got ${JSON.stringify(v)}`);
  return n;
}

function str(raw: Record<string, unknown>, key: string): string | undefined {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new ConfigError(`PROXY_CONFIG.${key}`, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

/** Parses PROXY_CONFIG (absent or blank: Istio's defaults). */
export function parseProxyConfig(text: string | undefined): ProxyConfig {
  let parsed: unknown = {};
  if (text !== undefined && text.trim() !== '') {
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw new ConfigError('PROXY_CONFIG', `not valid JSON: ${(e as Error).message}`);
    }
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new ConfigError('PROXY_CONFIG', 'expected a JSON object');
  const raw: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(parsed)) raw[camel(k)] = v;

  const meta = raw.proxyMetadata ?? {};
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new ConfigError('PROXY_CONFIG.proxyMetadata', 'expected an object of strings');
  const proxyMetadata: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) {
    if (typeof v !== 'string') throw new ConfigError(`PROXY_CONFIG.proxyMetadata.${k}`, `expected a string, got ${JSON.stringify(v)}`);
    proxyMetadata[k] = v;
  }
  const discoveryAddress = str(raw, 'discoveryAddress') || DEFAULT_DISCOVERY_ADDRESS;
  if (!/^(\[[^\]]+\]|[^:/\s]+):\d{1,5}$/.test(discoveryAddress)) throw new ConfigError('PROXY_CONFIG.discoveryAddress', `expected host:port, got "${discoveryAddress}"`);
  const policy = str(raw, 'controlPlaneAuthPolicy');
  if (policy !== undefined && policy !== 'NONE' && policy !== 'MUTUAL_TLS' && policy !== 'INHERIT') {
    throw new ConfigError('PROXY_CONFIG.controlPlaneAuthPolicy', `expected NONE or MUTUAL_TLS, got "${policy}"`);
  }
  const interceptionMode = str(raw, 'interceptionMode') ?? 'REDIRECT';
  if (!['REDIRECT', 'TPROXY', 'NONE'].includes(interceptionMode)) throw new ConfigError('PROXY_CONFIG.interceptionMode', `expected REDIRECT, TPROXY or NONE, got "${interceptionMode}"`);

  return {
    discoveryAddress,
    drainMs: duration(raw, 'drainDuration', 45_000),
    terminationDrainMs: duration(raw, 'terminationDrainDuration', 5_000),
    proxyMetadata,
    statusPort: port(raw, 'statusPort', 15020),
    adminPort: port(raw, 'proxyAdminPort', 15000),
    controlPlaneAuthPolicy: policy,
    interceptionMode,
    raw,
    ignored: Object.keys(raw).filter((k) => IGNORED.has(k)).sort(),
    unknown: Object.keys(raw).filter((k) => !KNOWN.has(k) && !IGNORED.has(k)).sort(),
  };
}

/** pilot-agent applies proxyMetadata as environment variables of the agent; they win over the pod's own. */
export const withProxyMetadata = (env: Env, pc: ProxyConfig): Env => ({ ...env, ...pc.proxyMetadata });
