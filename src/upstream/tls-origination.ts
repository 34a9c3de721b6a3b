/**
 * TLS origination toward a mesh peer, as Envoy does for Istio's ISTIO_MUTUAL clusters: the workload
 * certificate, the mesh roots, SNI from the config (`outbound_.PORT_.SUBSET_.HOST`), TLS 1.2–1.3, and the
 * peer's SAN checked against `match_subject_alt_names` (the server's hostname is not checked: mesh
 * certificates carry SPIFFE ids, not DNS names).
 *
 * ALPN: Istio's clusters offer `istio-peer-exchange` first, which obliges both ends to run the metadata
 * exchange preamble. We do not implement it, so we never offer it: only `istio` (and whatever else the
 * config lists) goes out, and an Envoy server then skips the exchange.
 */
import type { Socket } from 'node:net';
import type { ConnectionOptions, PeerCertificate, TLSSocket } from 'node:tls';
import type { Cluster, StringMatcher } from '../config/model.js';
import { matchString } from '../config/string-match.js';
import { selectTransportSocket, type TransportSocketMatch, type UpstreamTls } from '../config/tls-context.js';
import { tls as tlsModule } from '../sys/builtins.js';
import { meshSecretGeneration, meshSecureContext } from './mesh-secrets.js';

/**
 * TLS sessions to resume, per peer, SNI, SAN matchers and certificate generation, as Envoy keeps one per
 * upstream: a resumed handshake skips the signatures, most of a new connection's CPU. Node does not re-run
 * checkServerIdentity on a resumed session, which is why the SAN matchers are part of the key.
 */
const sessions = new Map<string, Buffer>();
const MAX_SESSIONS = 4096;

/** Never offered: we do not speak Istio's metadata exchange. */
export const PEER_EXCHANGE_ALPN = 'istio-peer-exchange';

/** How to wrap an upstream connection: nothing (plaintext), TLS, or a reason it cannot be made. */
export type UpstreamTransport = { readonly tls: UpstreamTls } | { readonly unsupported: string } | undefined;

/** The transport socket for an endpoint of `cluster`, by its `envoy.transport_socket_match` metadata. */
export function transportFor(cluster: Cluster, endpointMatch: Readonly<Record<string, string>> | undefined): UpstreamTransport {
  if (!cluster.transportSocketMatches?.length && !cluster.transportSocket) return undefined;
  const chosen: Pick<TransportSocketMatch, 'tls' | 'unsupported'> | undefined = selectTransportSocket(cluster.transportSocketMatches ?? [], cluster.transportSocket, endpointMatch);
  if (chosen?.unsupported) return { unsupported: chosen.unsupported };
  return chosen?.tls ? { tls: chosen.tls } : undefined;
}


/** Every SAN of a certificate (URI, DNS, IP, email), without its type prefix. */
export function sansOf(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): string[] {
  return (cert?.subjectaltname ?? '')
    .split(', ')
    .filter(Boolean)
    .map((s) => s.slice(s.indexOf(':') + 1));
}

/** Envoy's match_subject_alt_names: no matchers accept any peer the roots accept. */
export function sanAccepted(matchers: readonly StringMatcher[], sans: readonly string[]): boolean {
  return matchers.length === 0 || matchers.some((m) => sans.some((s) => matchString(m, s)));
}

export function alpnToOffer(tls: UpstreamTls): string[] {
  const offered = tls.alpn.filter((p) => p !== PEER_EXCHANGE_ALPN);
  return offered;
}

/** Wraps a (connecting or connected) TCP socket in a client TLS session; throws if the secrets are missing. */
export function originateTls(raw: Socket, tls: UpstreamTls, peer = ''): TLSSocket {
  const key = `${meshSecretGeneration()}|${peer}|${tls.sni ?? ''}|${JSON.stringify(tls.matchSans)}|${tls.certificateSecret}|${tls.validationSecret}`;
  const options: ConnectionOptions = {
    session: sessions.get(key),
    socket: raw,
    secureContext: meshSecureContext(tls.certificateSecret, tls.validationSecret, tls.minVersion, tls.maxVersion),
    servername: tls.sni,
    ALPNProtocols: alpnToOffer(tls),
    rejectUnauthorized: true,
    checkServerIdentity: (_host, cert) =>
      sanAccepted(tls.matchSans, sansOf(cert)) ? undefined : new Error(`peer certificate SANs [${sansOf(cert).join(', ')}] match none of match_subject_alt_names`),
  };
  const s = tlsModule().connect(options);
  // Only a session whose handshake passed the checks may be resumed (TLS 1.2 hands it over before them).
  let verified = false;
  let early: Buffer | undefined;
  const keep = (session: Buffer) => {
    if (!sessions.has(key) && sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!);
    sessions.set(key, session);
  };
  s.on('session', (session: Buffer) => (verified ? keep(session) : (early = session)));
  s.once('secureConnect', () => {
    verified = true;
    if (early) keep(early);
  });
  // net.Socket's allowHalfOpen is not an option of tls.connect: set it so a FIN can be relayed one way.
  (s as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
  return s;
}
