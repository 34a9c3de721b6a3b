/**
 * Where the workload identity comes from, named as pilot-agent names it: the CA's address (CA_ADDR), its
 * certificate name (ISTIOD_SAN), the trust domain and the pod's namespace and service account (the SPIFFE
 * id), the cluster id sent with every call, the lifetime asked for (SECRET_TTL), the rotation point
 * (SECRET_GRACE_PERIOD_RATIO, SECRET_GRACE_PERIOD_RATIO_JITTER) and the key type (ECC_SIGNATURE_ALGORITHM).
 * The token and the mesh root are the files Istio's injector mounts.
 */
import { existsSync } from 'node:fs';
import { ConfigError } from '../config/reader.js';

export type Env = Readonly<Record<string, string | undefined>>;

export interface IdentityOptions {
  /** host:port of istiod's CA (gRPC over TLS). */
  readonly caAddress: string;
  /** The name the CA's certificate must carry; also sent as SNI and :authority. */
  readonly caServerName: string;
  /** The mesh root: verifies istiod (CA and xDS) and is the trust anchor until a CA response brings its own. */
  readonly rootCertFile: string;
  /** A projected service-account token; re-read on every call because the kubelet rotates it. */
  readonly tokenFile: string;
  readonly clusterId: string;
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly ttlSeconds: number;
  readonly keyAlgorithm: 'RSA' | 'ECDSA';
  /** Rotate when this fraction of the lifetime is left (0.5: at half-life). */
  readonly graceRatio: number;
  /** ± this fraction of the lifetime, at random, so a mesh does not rotate in lock-step. */
  readonly graceJitterRatio: number;
  /** First retry delay after a failed call; doubles up to retryMaxMs. */
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /**
   * A CA is part of this pod's set-up: CA_ADDR or --ca-address given, or the token Istio mounts present.
   * Without one (a sidecar run by hand, a test) nothing would ever issue a certificate, so readiness does
   * not wait for one and mesh TLS fails closed instead.
   */
  readonly configured: boolean;
}

export const ISTIO_TOKEN_FILE = '/var/run/secrets/tokens/istio-token';
export const ISTIO_ROOT_CERT_FILE = '/var/run/secrets/istio/root-cert.pem';
export const DEFAULT_CA_ADDR = 'istiod.istio-system.svc:15012';

/** Flags that override the environment (the CLI's --ca-address, --ca-root-cert, --token-file). */
export interface IdentityFlags {
  readonly caAddress?: string;
  readonly rootCertFile?: string;
  readonly tokenFile?: string;
}

const GO_UNITS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** A Go duration as pilot-agent reads SECRET_TTL ("24h", "1h30m", "90s"), in milliseconds. */
export function parseGoDurationMs(v: string): number | undefined {
  if (!/^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(v)) return undefined;
  let ms = 0;
  for (const [, n, , unit] of v.matchAll(/(\d+(\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * GO_UNITS[unit!]!;
  return ms;
}

function ratio(env: Env, name: string, fallback: number): number {
  const v = env[name];
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n >= 1) throw new ConfigError(name, `expected a number in [0, 1), got "${v}"`);
  return n;
}

/** The host part of host:port (brackets of an IPv6 literal removed; a grpc-js scheme prefix dropped). */
export function hostOf(address: string): string {
  const bare = address.replace(/^(dns|ipv4|ipv6):(\/\/\/)?/, '');
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(bare) ?? /^([^:]+)(?::\d+)?$/.exec(bare);
  return m ? m[1]! : bare;
}

export function identityOptionsFrom(env: Env, flags: IdentityFlags = {}): IdentityOptions {
  const caAddress = flags.caAddress ?? (env.CA_ADDR || DEFAULT_CA_ADDR);
  if (!/^(\[[^\]]+\]|[^:/\s]+):\d{1,5}$/.test(caAddress)) throw new ConfigError('CA_ADDR', `expected host:port, got "${caAddress}"`);
  const ttlMs = env.SECRET_TTL ? parseGoDurationMs(env.SECRET_TTL) : 24 * 3600_000;
  if (ttlMs === undefined || ttlMs < 1000) throw new ConfigError('SECRET_TTL', `expected a duration of at least 1s such as "24h", got "${env.SECRET_TTL}"`);
  const algo = (env.ECC_SIGNATURE_ALGORITHM ?? '').toUpperCase();
  if (algo !== '' && algo !== 'ECDSA') throw new ConfigError('ECC_SIGNATURE_ALGORITHM', `expected ECDSA or nothing, got "${env.ECC_SIGNATURE_ALGORITHM}"`);
  return {
    caAddress,
    caServerName: env.ISTIOD_SAN || hostOf(caAddress),
    rootCertFile: flags.rootCertFile ?? ISTIO_ROOT_CERT_FILE,
    tokenFile: flags.tokenFile ?? ISTIO_TOKEN_FILE,
    clusterId: env.ISTIO_META_CLUSTER_ID || 'Kubernetes',
    trustDomain: env.TRUST_DOMAIN || 'cluster.local',
    namespace: env.POD_NAMESPACE || 'default',
    serviceAccount: env.SERVICE_ACCOUNT || 'default',
    ttlSeconds: Math.round(ttlMs / 1000),
    keyAlgorithm: algo === 'ECDSA' ? 'ECDSA' : 'RSA',
    graceRatio: ratio(env, 'SECRET_GRACE_PERIOD_RATIO', 0.5),
    graceJitterRatio: ratio(env, 'SECRET_GRACE_PERIOD_RATIO_JITTER', 0.01),
    retryBaseMs: 1000,
    retryMaxMs: 30_000,
    configured: flags.caAddress !== undefined || !!env.CA_ADDR || existsSync(flags.tokenFile ?? ISTIO_TOKEN_FILE),
  };
}

export const spiffeIdOf = (o: Pick<IdentityOptions, 'trustDomain' | 'namespace' | 'serviceAccount'>) =>
  `spiffe://${o.trustDomain}/ns/${o.namespace}/sa/${o.serviceAccount}`;
