/**
 * A test CA doing istiod's CreateCertificate (istio.v1.auth.IstioCertificateService) over real gRPC with
 * TLS, in its own process. It checks the bearer token and the ClusterID metadata, verifies the CSR, and
 * signs the CSR's SPIFFE URI SAN with a test root, backdating NotBefore by two minutes as istiod does.
 *
 *   node dist/test/peers/test-ca.js --root-cert F --root-key F --tls-cert F --tls-key F --token T
 *                                   [--cluster-id Kubernetes] [--host 127.0.0.1] [--port 0] [--max-ttl 86400]
 *
 * stdout, JSON lines: {"event":"listening","port":N} · {"event":"issued","spiffe":…,"ttl":N,"notAfter":…}
 *   · {"event":"refused","reason":…} · {"event":"done","cmd":…}
 * stdin, JSON lines: {"cmd":"fail","code":14}  (fail every call with that gRPC status; code 0: stop failing)
 *   · {"cmd":"ttl","seconds":120}  (cap the lifetime issued) · {"cmd":"stop"} · {"cmd":"start"}
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { type CertificateRequest, type CertificateResponse, caProtos, CREATE_CERTIFICATE } from '../../src/identity/ca-proto.js';
import { loadIssuer, signLeaf, x509 } from '../helpers/pki.js';
import { exitWhenStdinCloses } from './lifeline.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'root-cert': { type: 'string' },
    'root-key': { type: 'string' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    token: { type: 'string' },
    'cluster-id': { type: 'string', default: 'Kubernetes' },
    'max-ttl': { type: 'string', default: '86400' },
  },
});
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const read = (f: string | undefined) => readFileSync(f!, 'utf8');

const issuer = await loadIssuer(read(values['root-cert']), read(values['root-key']));
const { Request, Response } = caProtos();
let failCode = 0;
let maxTtl = Number(values['max-ttl']);

function refuse(cb: grpc.sendUnaryData<CertificateResponse>, code: grpc.status, reason: string) {
  out({ event: 'refused', reason });
  cb({ code, details: reason });
}

async function createCertificate(call: grpc.ServerUnaryCall<CertificateRequest, CertificateResponse>, cb: grpc.sendUnaryData<CertificateResponse>) {
  if (failCode) return refuse(cb, failCode, 'told to fail');
  const auth = String(call.metadata.get('authorization')[0] ?? '');
  if (auth !== `Bearer ${values.token}`) return refuse(cb, grpc.status.UNAUTHENTICATED, `bad token: "${auth}"`);
  const cluster = String(call.metadata.get('clusterid')[0] ?? '');
  if (cluster !== values['cluster-id']) return refuse(cb, grpc.status.UNAUTHENTICATED, `bad ClusterID: "${cluster}"`);
  try {
    const csr = new x509.Pkcs10CertificateRequest(call.request.csr);
    if (!(await csr.verify())) return refuse(cb, grpc.status.INVALID_ARGUMENT, 'CSR signature does not verify');
    const san = csr.extensions.find((e): e is x509.SubjectAlternativeNameExtension => e instanceof x509.SubjectAlternativeNameExtension);
    const uris = san?.names.items.filter((n: x509.GeneralName) => n.type === 'url').map((n: x509.GeneralName) => n.value) ?? [];
    if (uris.length !== 1 || !uris[0]!.startsWith('spiffe://')) return refuse(cb, grpc.status.INVALID_ARGUMENT, `CSR must carry one SPIFFE URI SAN, got ${JSON.stringify(uris)}`);
    if (!san!.critical) return refuse(cb, grpc.status.INVALID_ARGUMENT, 'the SAN of a CSR with an empty subject must be critical');
    const ttl = Math.min(Number(call.request.validity_duration) || maxTtl, maxTtl);
    const notAfter = new Date(Date.now() + ttl * 1000);
    const leaf = await signLeaf(issuer, csr.publicKey, { uris, notAfter, notBefore: new Date(Date.now() - 120_000) });
    out({ event: 'issued', spiffe: uris[0], ttl, notAfter: notAfter.toISOString(), algorithm: csr.publicKey.algorithm.name, metadata: call.request.metadata });
    cb(null, { cert_chain: [leaf, issuer.certPem] });
  } catch (e) {
    refuse(cb, grpc.status.INVALID_ARGUMENT, `bad CSR: ${(e as Error).message}`);
  }
}

let server: grpc.Server | undefined;
let port = Number(values.port);
const creds = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(read(values['tls-key'])), cert_chain: Buffer.from(read(values['tls-cert'])) }], false);

function start(): Promise<void> {
  const s = new grpc.Server();
  s.register(
    CREATE_CERTIFICATE,
    (call: grpc.ServerUnaryCall<CertificateRequest, CertificateResponse>, cb: grpc.sendUnaryData<CertificateResponse>) => void createCertificate(call, cb),
    (r: CertificateResponse) => Buffer.from(Response.encode(Response.fromObject(r)).finish()),
    (b: Buffer) => Request.toObject(Request.decode(b), { longs: Number, defaults: true }) as CertificateRequest,
    'unary',
  );
  return new Promise((resolve, reject) =>
    s.bindAsync(`${values.host}:${port}`, creds, (err, p) => {
      if (err) return reject(err);
      port = p;
      server = s;
      out({ event: 'listening', port: p });
      resolve();
    }),
  );
}

await start();
exitWhenStdinCloses();
createInterface({ input: process.stdin }).on('line', (line) => {
  void (async () => {
    const c = JSON.parse(line) as { cmd: string; code?: number; seconds?: number };
    if (c.cmd === 'fail') failCode = c.code ?? grpc.status.UNAVAILABLE;
    else if (c.cmd === 'ttl') maxTtl = c.seconds!;
    else if (c.cmd === 'stop') {
      server?.forceShutdown();
      server = undefined;
    } else if (c.cmd === 'start') await start();
    out({ event: 'done', cmd: c.cmd });
  })();
});
