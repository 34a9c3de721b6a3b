/**
 * istio.v1.auth.IstioCertificateService (proto/istio/security/v1alpha1/ca.proto, vendored from istio/api),
 * loaded with protobufjs; the test CA uses the same schema for its side.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { packagePath } from '../sys/package-root.js';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);

export const CREATE_CERTIFICATE = '/istio.v1.auth.IstioCertificateService/CreateCertificate';

export interface CertificateRequest {
  csr: string;
  validity_duration: number;
  metadata?: { fields: Record<string, { stringValue: string }> };
}

export interface CertificateResponse {
  cert_chain: string[];
  root_cert?: { ca_cert: string[] };
}

export interface CaProtos {
  readonly Request: protobuf.Type;
  readonly Response: protobuf.Type;
}

let cached: CaProtos | undefined;

export function caProtos(): CaProtos {
  if (cached) return cached;
  const ours = packagePath('proto');
  const wkt = dirname(require.resolve('protobufjs/package.json'));
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (target.startsWith('google/protobuf/') ? join(wkt, target) : join(ours, target));
  root.loadSync('istio/security/v1alpha1/ca.proto', { keepCase: true });
  root.resolveAll();
  cached = { Request: root.lookupType('istio.v1.auth.IstioCertificateRequest'), Response: root.lookupType('istio.v1.auth.IstioCertificateResponse') };
  return cached;
}

/** google.protobuf.Struct of string values, as protobufjs encodes it. */
export const stringStruct = (fields: Record<string, string>) => ({
  fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, { stringValue: v }])),
});
