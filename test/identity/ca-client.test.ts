/**
 * The CA client against a test CA over real gRPC and TLS: the CSR it sends (key type, SPIFFE SAN), the
 * token and ClusterID it must present, its retries, and the certificate it installs and renews.
 */
import { X509Certificate } from 'node:crypto';
import t from 'tap';
import { identityOptionsFrom, type IdentityOptions } from '../../src/identity/options.js';
import { rotationDelayMs, WorkloadIdentity } from '../../src/identity/workload-identity.js';
import { CLUSTER_ID, ISTIOD_SAN, makeMeshPki, type MeshPki, TestCa, TOKEN } from '../helpers/mesh-ca.js';

const opts = (pki: MeshPki, ca: TestCa, over: Partial<IdentityOptions> = {}, env: Record<string, string> = {}): IdentityOptions => ({
  ...identityOptionsFrom({ CA_ADDR: `127.0.0.1:${ca.port}`, ISTIOD_SAN, POD_NAMESPACE: 'shop', SERVICE_ACCOUNT: 'cart', ISTIO_META_CLUSTER_ID: CLUSTER_ID, ...env }, {
    rootCertFile: pki.file('root-cert.pem'),
    tokenFile: pki.file('istio-token'),
  }),
  retryBaseMs: 100,
  retryMaxMs: 400,
  ...over,
});

const waitUntil = async (cond: () => boolean, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
};

t.test('options: Istio env names, defaults and bad values', async (t) => {
  t.equal(identityOptionsFrom({}, { tokenFile: '/nonexistent/istio-token' }).configured, false, 'no CA_ADDR, no flag, no token: no CA to wait for');
  t.equal(identityOptionsFrom({ CA_ADDR: '10.0.0.1:15012' }, { tokenFile: '/nonexistent/istio-token' }).configured, true);
  const o = identityOptionsFrom({});
  t.match(o, { caAddress: 'istiod.istio-system.svc:15012', caServerName: 'istiod.istio-system.svc', rootCertFile: '/var/run/secrets/istio/root-cert.pem', tokenFile: '/var/run/secrets/tokens/istio-token', clusterId: 'Kubernetes', trustDomain: 'cluster.local', ttlSeconds: 86400, keyAlgorithm: 'RSA', graceRatio: 0.5 });
  t.match(identityOptionsFrom({ CA_ADDR: '10.0.0.1:15012', ISTIOD_SAN: 'istiod.x.svc', ECC_SIGNATURE_ALGORITHM: 'ECDSA', SECRET_TTL: '2m' }), { caServerName: 'istiod.x.svc', keyAlgorithm: 'ECDSA', ttlSeconds: 120 });
  t.throws(() => identityOptionsFrom({ CA_ADDR: 'no-port' }), /CA_ADDR: expected host:port/);
  t.throws(() => identityOptionsFrom({ SECRET_TTL: 'soon' }), /SECRET_TTL/);
  t.throws(() => identityOptionsFrom({ ECC_SIGNATURE_ALGORITHM: 'ED25519' }), /ECC_SIGNATURE_ALGORITHM/);
  t.throws(() => identityOptionsFrom({ SECRET_GRACE_PERIOD_RATIO: '1.5' }), /SECRET_GRACE_PERIOD_RATIO/);
});

t.test('rotation is due at half of the lifetime measured from receipt, with jitter', async (t) => {
  const received = 1_000_000;
  const notAfter = received + 120_000; // issued with NotBefore two minutes back: not part of the lifetime
  t.equal(rotationDelayMs(received, notAfter, 0.5, 0, () => 0.5), 60_000);
  t.equal(rotationDelayMs(received, notAfter, 0.5, 0.01, () => 1), 58_800, 'jitter up: a little earlier');
  t.equal(rotationDelayMs(received, notAfter, 0.5, 0.01, () => 0), 61_200, 'jitter down: a little later');
  t.equal(rotationDelayMs(received, received - 5, 0.5, 0.01), 0, 'an expired certificate is renewed at once');
});

t.test('CreateCertificate over gRPC with TLS, token and ClusterID', async (t) => {
  const pki = await makeMeshPki();
  const ca = await TestCa.start(pki);
  t.teardown(() => ca.stop());

  t.test('RSA 2048 by default: the certificate carries the SPIFFE id and matches the key', async (t) => {
    const id = new WorkloadIdentity(opts(pki, ca));
    t.teardown(() => id.stop());
    id.start();
    const cert = await id.whenReady();
    t.equal(cert.spiffeId, 'spiffe://cluster.local/ns/shop/sa/cart');
    const leaf = new X509Certificate(cert.chainPem);
    t.equal(leaf.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/cart');
    t.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(cert.keyPem)), 'key and certificate belong together');
    t.equal(leaf.publicKey.asymmetricKeyType, 'rsa');
    t.equal(leaf.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
    t.ok(leaf.verify(new X509Certificate(pki.root.certPem).publicKey), 'signed by the mesh root');
    t.equal(cert.rootsPem.trim(), pki.root.certPem.trim(), 'ROOTCA is the chain\'s last element');
    t.match(cert.chainPem, /END CERTIFICATE-----\n-----BEGIN CERTIFICATE/, 'the chain keeps the root, as the CA sent it');
    const issued = ca.issued().at(-1)!;
    t.match(issued, { spiffe: 'spiffe://cluster.local/ns/shop/sa/cart', ttl: 86400, algorithm: 'RSASSA-PKCS1-v1_5' });
    t.match(issued.metadata, { fields: { ClusterID: { stringValue: 'Kubernetes' } } }, 'ClusterID also in the request metadata');
    t.ok(id.ready);
  });

  t.test('ECDSA P-256 with ECC_SIGNATURE_ALGORITHM=ECDSA', async (t) => {
    const id = new WorkloadIdentity(opts(pki, ca, {}, { ECC_SIGNATURE_ALGORITHM: 'ECDSA' }));
    t.teardown(() => id.stop());
    id.start();
    const leaf = new X509Certificate((await id.whenReady()).chainPem);
    t.equal(leaf.publicKey.asymmetricKeyType, 'ec');
    t.equal(leaf.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    t.equal(ca.issued().at(-1)!.algorithm, 'ECDSA');
  });

  t.test('a wrong token is refused and retried; the token file is re-read on every call', async (t) => {
    pki.setToken('stale-token');
    const id = new WorkloadIdentity(opts(pki, ca));
    t.teardown(() => {
      id.stop();
      pki.setToken(TOKEN);
    });
    id.start();
    await waitUntil(() => ca.refused().filter((r) => r.includes('stale-token')).length >= 2);
    t.notOk(id.ready, 'not ready without a certificate');
    t.match(id.lastError, /bad token/);
    pki.setToken(TOKEN); // the kubelet rotated the projected token
    await id.whenReady();
    t.ok(id.ready);
  });

  t.test('a wrong ClusterID is refused', async (t) => {
    const id = new WorkloadIdentity(opts(pki, ca, { clusterId: 'elsewhere' }));
    t.teardown(() => id.stop());
    id.start();
    await waitUntil(() => ca.refused().some((r) => r.includes('bad ClusterID: "elsewhere"')));
    t.notOk(id.ready);
  });

  t.test('the CA must present the expected name', async (t) => {
    const id = new WorkloadIdentity(opts(pki, ca, { caServerName: 'not-istiod.example' }));
    t.teardown(() => id.stop());
    id.start();
    await waitUntil(() => id.lastError !== undefined);
    t.notOk(id.ready);
    t.notMatch(id.lastError, /bad token/, 'refused by TLS, before any call reached the CA');
  });

  t.test('a failing CA: backoff, then a certificate once it recovers', async (t) => {
    await ca.command({ cmd: 'fail', code: 14 });
    const id = new WorkloadIdentity(opts(pki, ca));
    t.teardown(() => id.stop());
    id.start();
    await waitUntil(() => ca.refused().filter((r) => r === 'told to fail').length >= 3);
    t.notOk(id.ready);
    await ca.command({ cmd: 'fail', code: 0 });
    await id.whenReady();
    t.ok(id.ready);
  });

  t.test('short-lived certificates are renewed before they expire, with a new key each time', async (t) => {
    await ca.command({ cmd: 'ttl', seconds: 4 });
    t.teardown(() => ca.command({ cmd: 'ttl', seconds: 86400 }));
    const id = new WorkloadIdentity(opts(pki, ca));
    t.teardown(() => id.stop());
    const seen: { generation: number; keyPem: string; notAfter: Date }[] = [];
    id.onChange((c) => seen.push(c));
    id.start();
    await waitUntil(() => seen.length >= 3, 60_000);
    t.same(seen.map((c) => c.generation), [1, 2, 3]);
    t.equal(new Set(seen.map((c) => c.keyPem)).size, 3, 'a fresh key per certificate');
    for (let i = 1; i < seen.length; i++) t.ok(seen[i]!.notAfter > seen[i - 1]!.notAfter);
    t.ok(id.ready);
  });
});
