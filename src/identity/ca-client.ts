/**
 * The CA client: one CreateCertificate call to istiod over gRPC, as pilot-agent makes it. TLS verifies the
 * CA against the mesh root and its name (ISTIOD_SAN, else the address's host); each call carries the
 * service-account token (re-read from its file every time: the kubelet rotates it) and the cluster id.
 * The address is resolved by grpc-js with the system resolver (getaddrinfo).
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { type CertificateRequest, type CertificateResponse, caProtos, CREATE_CERTIFICATE, stringStruct } from './ca-proto.js';

export interface CaCallOptions {
  readonly caAddress: string;
  readonly caServerName: string;
  readonly rootCertFile: string;
  readonly tokenFile: string;
  readonly clusterId: string;
  readonly deadlineMs?: number;
}

export interface SignedChain {
  /** Leaf first. */
  readonly chain: readonly string[];
  /** The trust anchors the response names (root_cert, else the chain's last element). */
  readonly roots: readonly string[];
}

export class CaError extends Error {
  constructor(message: string, readonly code?: grpc.status) {
    super(message);
  }
}

const readText = (file: string, what: string) => {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new CaError(`cannot read the ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
};

/** Bearer token and ClusterID, the metadata istiod's authenticators read (also sent on the xDS stream). */
export function callMetadata(tokenFile: string, clusterId: string): grpc.Metadata {
  const md = new grpc.Metadata();
  const token = readText(tokenFile, 'token').toString('utf8').trim();
  if (!token) throw new CaError(`the token file ${tokenFile} is empty`);
  md.set('authorization', `Bearer ${token}`);
  md.set('ClusterID', clusterId);
  return md;
}

/** PEM blocks of a string that may hold several certificates. */
export const pemBlocks = (text: string): string[] =>
  text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((b) => `${b}\n`) ?? [];

export function createCertificate(o: CaCallOptions, csrPem: string, ttlSeconds: number): Promise<SignedChain> {
  let creds: grpc.ChannelCredentials;
  let metadata: grpc.Metadata;
  try {
    creds = grpc.credentials.createSsl(readText(o.rootCertFile, 'mesh root'));
    metadata = callMetadata(o.tokenFile, o.clusterId);
  } catch (e) {
    return Promise.reject(e);
  }
  const { Request, Response } = caProtos();
  const client = new grpc.Client(o.caAddress, creds, {
    'grpc.ssl_target_name_override': o.caServerName,
    'grpc.default_authority': o.caServerName,
  });
  const request: CertificateRequest = { csr: csrPem, validity_duration: ttlSeconds, metadata: stringStruct({ ClusterID: o.clusterId }) };
  return new Promise<SignedChain>((resolve, reject) => {
    client.makeUnaryRequest<CertificateRequest, CertificateResponse>(
      CREATE_CERTIFICATE,
      (r) => Buffer.from(Request.encode(Request.fromObject(r)).finish()),
      (b) => Response.toObject(Response.decode(b), { defaults: true, arrays: true }) as CertificateResponse,
      request,
      metadata,
      { deadline: Date.now() + (o.deadlineMs ?? 10_000) },
      (err, res) => {
        client.close();
        if (err) return reject(new CaError(`CreateCertificate to ${o.caAddress}: ${err.details || err.message}`, err.code));
        // Some CAs put the whole chain in one string: split every element into certificates.
        const chain = (res?.cert_chain ?? []).flatMap(pemBlocks);
        if (chain.length === 0) return reject(new CaError(`CreateCertificate to ${o.caAddress}: empty certificate chain`));
        const roots = (res?.root_cert?.ca_cert ?? []).flatMap(pemBlocks);
        resolve({ chain, roots: roots.length > 0 ? roots : chain.length > 1 ? [chain[chain.length - 1]!] : [] });
      },
    );
  });
}
