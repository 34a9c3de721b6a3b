/**
 * Terminates mesh mTLS on a chain with a DownstreamTlsContext (Istio's inbound `transport_protocol: tls`
 * chains): the workload certificate, a client certificate required and verified against the mesh roots,
 * its SAN checked against `match_subject_alt_names` (Istio: `spiffe://TRUST_DOMAIN/`), then the decrypted
 * stream goes to the chain's filters as if it were the connection.
 *
 * ALPN is chosen here from what the client offered (the inspector read it): the first of the chain's
 * protocols the client also offers, never `istio-peer-exchange` (we do not run Istio's metadata exchange,
 * and an Envoy client skips it when the server does not select it); no match means no ALPN, as Envoy
 * does, where Node's own selection would abort the handshake.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Counter } from '../observe/prom.js';
import { registry } from '../observe/metrics.js';
import type { DownstreamTls } from '../config/tls-context.js';
import { meshSecureContext } from '../upstream/mesh-secrets.js';
import { PEER_EXCHANGE_ALPN, sanAccepted, sansOf } from '../upstream/tls-origination.js';
import { tls as tlsModule } from '../sys/builtins.js';

export const tlsMetrics = {
  accepted: new Counter({ name: 'xsidecar_downstream_mtls_accepted_total', help: 'Inbound mTLS handshakes completed and accepted', labelNames: ['listener'], registers: [registry] }),
  refused: new Counter({ name: 'xsidecar_downstream_mtls_refused_total', help: 'Inbound TLS connections refused or failed in the handshake (no or untrusted client certificate, SAN not allowed, no workload certificate yet)', labelNames: ['listener'], registers: [registry] }),
};

export interface Terminated {
  readonly socket: TLSSocket;
  /** The peer's SANs (a SPIFFE id for a mesh peer). */
  readonly peerSans: readonly string[];
  readonly alpn: string | false;
}

export function selectAlpn(configured: readonly string[], offered: readonly string[]): string | undefined {
  return configured.find((p) => p !== PEER_EXCHANGE_ALPN && offered.includes(p));
}

/** Handshake timeout: a client that opened TLS and stalls should not hold the connection for ever. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Runs the server handshake on `raw` (whose ClientHello was put back by the inspector) and calls `done`
 * once the peer is accepted, or with the reason it was refused (the connection is then closed).
 */
export function terminateTls(raw: Socket, tls: DownstreamTls, offeredAlpn: readonly string[], done: (err: Error | null, t?: Terminated) => void): void {
  let secureContext;
  try {
    secureContext = meshSecureContext(tls.certificateSecret, tls.validationSecret, tls.minVersion, tls.maxVersion);
  } catch (e) {
    raw.destroy();
    return done(e as Error);
  }
  const alpn = selectAlpn(tls.alpn, offeredAlpn);
  const verify = tls.requireClientCertificate || tls.matchSans.length > 0;
  const s = new (tlsModule().TLSSocket)(raw, {
    isServer: true,
    secureContext,
    requestCert: verify,
    rejectUnauthorized: tls.requireClientCertificate,
    ...(alpn ? { ALPNProtocols: [alpn] } : {}),
  });
  (s as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
  let settled = false;
  const fail = (err: Error) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    s.destroy();
    raw.destroy();
    done(err);
  };
  const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), HANDSHAKE_TIMEOUT_MS);
  s.once('error', fail);
  s.once('close', () => fail(new Error('closed during the TLS handshake')));
  raw.once('close', () => s.destroy());
  s.once('secure', () => {
    if (settled) return;
    // Node verifies the chain in the handshake but reports the result afterwards (as tls.Server does).
    const handle = (s as unknown as { _handle?: { verifyError?: () => Error | null } })._handle;
    const verifyError = verify ? handle?.verifyError?.() : null;
    const cert = s.getPeerCertificate();
    const hasCert = !!cert && Object.keys(cert).length > 0;
    if (tls.requireClientCertificate && (!hasCert || verifyError)) return fail(new Error(`client certificate refused: ${verifyError?.message ?? 'none presented'}`));
    const sans = hasCert && !verifyError ? sansOf(cert) : [];
    if (tls.matchSans.length > 0 && !sanAccepted(tls.matchSans, sans)) return fail(new Error(`client certificate SANs [${sans.join(', ')}] match none of match_subject_alt_names`));
    settled = true;
    clearTimeout(timer);
    s.off('error', fail);
    s.on('error', () => undefined); // the chain's filters handle errors from here on
    done(null, { socket: s, peerSans: sans, alpn: s.alpnProtocol ?? false });
  });
}
