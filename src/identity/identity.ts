/**
 * The workload identity as the rest of the sidecar sees it: the SDS names Istio's configs use (`default`,
 * `ROOTCA`) resolved to the CA client's certificate, the xDS channel's credentials and call metadata, and
 * whether a config needs a certificate at all (readiness waits for one only then).
 */
import { readFileSync } from 'node:fs';
import type { MeshSecretSource } from '../upstream/mesh-secrets.js';
import { callMetadata } from './ca-client.js';
import type { WorkloadIdentity } from './workload-identity.js';

export const CERTIFICATE_SECRET = 'default';
export const ROOT_SECRET = 'ROOTCA';

/** `default` and `ROOTCA` from the identity; other SDS names do not exist (their connections fail closed). */
export function meshSecretSourceOf(identity: WorkloadIdentity): MeshSecretSource {
  return {
    get generation() {
      return identity.certificate?.generation ?? 0;
    },
    certificate(name) {
      const c = identity.certificate;
      return name === CERTIFICATE_SECRET && c ? { chainPem: c.chainPem, keyPem: c.keyPem } : undefined;
    },
    roots(name) {
      return name === ROOT_SECRET ? identity.certificate?.rootsPem : undefined;
    },
  };
}

/** Credentials and metadata for mTLS to istiod: the workload certificate, the mounted mesh root, the token. */
export function xdsIdentityOf(identity: WorkloadIdentity) {
  const o = identity.opts;
  return {
    serverName: o.caServerName,
    credentials() {
      const c = identity.certificate;
      if (!c) throw new Error(`no workload certificate yet${identity.lastError ? ` (${identity.lastError})` : ''}`);
      let rootPem: string;
      try {
        rootPem = readFileSync(o.rootCertFile, 'utf8');
      } catch {
        rootPem = c.rootsPem;
      }
      return { rootPem, keyPem: c.keyPem, chainPem: c.chainPem };
    },
    callMetadata() {
      const md = callMetadata(o.tokenFile, o.clusterId);
      return { authorization: String(md.get('authorization')[0]), ClusterID: o.clusterId };
    },
  };
}
