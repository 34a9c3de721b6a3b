/**
 * The secrets Istio's configs name by SDS (`default`: the workload certificate and key; `ROOTCA`: the mesh
 * roots), as a process-wide source the identity module fills in. upstream/ and listener/ only read it;
 * with no source set, mesh TLS connections fail closed with a clear reason.
 */
import type { SecureContext } from 'node:tls';
import type { TlsVersion } from '../config/tls-context.js';
import { tls } from '../sys/builtins.js';

export interface MeshSecretSource {
  /** Changes whenever a secret does: TLS contexts are cached per generation. */
  readonly generation: number;
  /** PEM chain and key of a certificate secret, or undefined when it does not exist (yet). */
  certificate(name: string): { readonly chainPem: string; readonly keyPem: string } | undefined;
  /** PEM roots of a validation secret, or undefined when it does not exist (yet). */
  roots(name: string): string | undefined;
}

let source: MeshSecretSource | undefined;

export function setMeshSecretSource(s: MeshSecretSource | undefined): void {
  source = s;
  cache.clear();
}

export class MeshSecretError extends Error {}

const cache = new Map<string, { generation: number; ctx: SecureContext }>();
const SESSION_ID_CONTEXT = 'xsidecar-mesh-mtls';

/** The secrets' generation (0 without a source): keys for anything derived from them. */
export const meshSecretGeneration = (): number => source?.generation ?? 0;

/**
 * A SecureContext for a (certificate, roots, versions) tuple, built once per secret generation: parsing a
 * key and chain costs far more than the handshake's own work. Connections keep the context they started
 * with, so a rotation never touches an open connection.
 */
export function meshSecureContext(certName: string | undefined, rootsName: string | undefined, minVersion: TlsVersion, maxVersion: TlsVersion): SecureContext {
  const s = source;
  if (!s) throw new MeshSecretError('no workload identity: mesh TLS needs the CA client (set CA_ADDR and mount the token and root)');
  const key = `${certName ?? ''}|${rootsName ?? ''}|${minVersion}|${maxVersion}`;
  const hit = cache.get(key);
  if (hit && hit.generation === s.generation) return hit.ctx;
  const cert = certName ? s.certificate(certName) : undefined;
  if (certName && !cert) throw new MeshSecretError(`secret "${certName}" is not available yet`);
  const roots = rootsName ? s.roots(rootsName) : undefined;
  if (rootsName && !roots) throw new MeshSecretError(`secret "${rootsName}" is not available yet`);
  // A session id context is what lets a server resume sessions whose client presented a certificate:
  // without one OpenSSL fails the handshake of any client that offers a ticket (Envoy clients do).
  const ctx = tls().createSecureContext({ key: cert?.keyPem, cert: cert?.chainPem, ca: roots, minVersion, maxVersion, sessionIdContext: SESSION_ID_CONTEXT });
  cache.set(key, { generation: s.generation, ctx });
  return ctx;
}

/** Whether a secret is available now (readiness and tests). */
export function meshSecretsReady(): boolean {
  return !!source?.certificate('default') && !!source.roots('ROOTCA');
}
