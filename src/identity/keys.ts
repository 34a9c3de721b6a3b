/**
 * The workload key and its certificate request. Node has no CSR builder, so @peculiar/x509 makes it on
 * Node's webcrypto. The key never leaves memory: it is exported to PEM only to build TLS contexts.
 */
import 'reflect-metadata'; // @peculiar/x509's dependency injection needs it loaded first
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export interface WorkloadKey {
  readonly keyPem: string;
  readonly csrPem: string;
}

const RSA: RsaHashedKeyGenParams = { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' };
const ECDSA: EcKeyGenParams & { hash: string } = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

const pem = (label: string, der: ArrayBuffer) =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;

/**
 * A fresh key pair (RSA 2048 or ECDSA P-256, as pilot-agent) and a CSR with an empty subject and one
 * critical URI SAN, the SPIFFE id: with no subject, RFC 5280 requires the SAN extension to be critical.
 */
export async function newWorkloadKey(spiffeId: string, algorithm: 'RSA' | 'ECDSA'): Promise<WorkloadKey> {
  const alg = algorithm === 'ECDSA' ? ECDSA : RSA;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as unknown as globalThis.CryptoKeyPair,
    signingAlgorithm: alg,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true)],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  // @peculiar/x509's PEM has no trailing newline; ours do, so concatenated PEM stays well-formed.
  return { keyPem: pem('PRIVATE KEY', pkcs8), csrPem: `${csr.toString('pem')}\n` };
}
