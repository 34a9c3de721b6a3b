/**
 * A test PKI made with @peculiar/x509 on Node's webcrypto: mesh roots, istiod's serving certificate,
 * workload certificates with SPIFFE ids. Keys and certificates are PEM so they can be handed to other
 * processes (the test CA, openssl) as files.
 */
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const subtle = webcrypto.subtle;

export const RSA_ALG = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
export const EC_ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

export interface Issuer {
  readonly certPem: string;
  readonly keyPem: string;
  readonly cert: x509.X509Certificate;
  readonly key: CryptoKey;
  readonly alg: typeof RSA_ALG | typeof EC_ALG;
}

const pem = (label: string, der: ArrayBuffer) =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;

const serial = () => {
  const b = randomBytes(16);
  b[0]! &= 0x7f;
  return b.toString('hex');
};

async function newKeys(alg: typeof RSA_ALG | typeof EC_ALG): Promise<CryptoKeyPair> {
  return (await subtle.generateKey(alg as RsaHashedKeyGenParams, true, ['sign', 'verify'])) as CryptoKeyPair;
}

/** A self-signed root, like istiod's own (`O=cluster.local`). */
export async function makeRoot(org = 'cluster.local', alg: typeof RSA_ALG | typeof EC_ALG = RSA_ALG): Promise<Issuer> {
  const keys = await newKeys(alg);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `O=${org}`,
    notBefore: new Date(Date.now() - 3600_000),
    notAfter: new Date(Date.now() + 10 * 24 * 3600_000),
    keys: keys as unknown as globalThis.CryptoKeyPair,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as unknown as globalThis.CryptoKey),
    ],
  });
  return { certPem: `${cert.toString('pem')}\n`, keyPem: pem('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)), cert, key: keys.privateKey, alg };
}

/** An issuer from PEM files' contents (the test CA process loads the root this way). */
export async function loadIssuer(certPem: string, keyPem: string): Promise<Issuer> {
  const cert = new x509.X509Certificate(certPem);
  const ec = cert.publicKey.algorithm.name === 'ECDSA';
  const alg = ec ? EC_ALG : RSA_ALG;
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  const key = await subtle.importKey('pkcs8', der, alg as RsaHashedImportParams, false, ['sign']);
  return { certPem, keyPem, cert, key, alg };
}

export interface LeafOptions {
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  /** The subject; Istio's workload certificates have none. */
  readonly subject?: string;
}

/** Signs a leaf for `publicKey` (SAN critical when the subject is empty, as RFC 5280 wants). */
export async function signLeaf(issuer: Issuer, publicKey: x509.PublicKey | CryptoKey, o: LeafOptions): Promise<string> {
  const names = [...(o.uris ?? []).map((value) => ({ type: 'url' as const, value })), ...(o.dns ?? []).map((value) => ({ type: 'dns' as const, value }))];
  const pub = publicKey instanceof x509.PublicKey ? await publicKey.export() : publicKey;
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    issuer: issuer.cert.subject,
    subject: o.subject ?? '',
    notBefore: o.notBefore ?? new Date(Date.now() - 120_000),
    notAfter: o.notAfter ?? new Date(Date.now() + 24 * 3600_000),
    publicKey: pub as unknown as globalThis.CryptoKey,
    signingKey: issuer.key as unknown as globalThis.CryptoKey,
    signingAlgorithm: issuer.alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      await x509.AuthorityKeyIdentifierExtension.create(issuer.cert),
      new x509.SubjectAlternativeNameExtension(names, !o.subject),
    ],
  });
  return `${cert.toString('pem')}\n`;
}

/** A fresh key and a leaf for it: { keyPem, certPem }. */
export async function issueLeaf(issuer: Issuer, o: LeafOptions, alg: typeof RSA_ALG | typeof EC_ALG = EC_ALG): Promise<{ keyPem: string; certPem: string }> {
  const keys = await newKeys(alg);
  const certPem = await signLeaf(issuer, keys.publicKey, o);
  return { certPem, keyPem: pem('PRIVATE KEY', await subtle.exportKey('pkcs8', keys.privateKey)) };
}

/** Writes files into a fresh temporary directory; returns a path builder. */
export function writeFiles(files: Record<string, string>): (name: string) => string {
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-pki-'));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
  return (name) => join(dir, name);
}

export const spiffe = (ns: string, sa: string, td = 'cluster.local') => `spiffe://${td}/ns/${ns}/sa/${sa}`;

export { x509 };
