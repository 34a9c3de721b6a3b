import type { CidrRange, FilterChain, Listener, SocketAddress } from '../config/model.js';
import { ipToBigInt, longestMatch } from './cidr.js';

export interface ConnectionFacts {
  readonly destination: SocketAddress;
  readonly source: SocketAddress;
  /** 'raw_buffer' unless a sniffer saw a TLS ClientHello. */
  readonly transportProtocol: string;
  /** SNI of a TLS ClientHello (the TLS inspector's), if any. */
  readonly serverName?: string;
  /** ALPN protocols a TLS client offered, in its order. */
  readonly applicationProtocols?: readonly string[];
}

/** Envoy's server_names: exact, else the longest `*.suffix` wildcard; chains naming none are the fallback. */
function narrowServerName(chains: Chains, sni: string | undefined): Chains {
  if (sni) {
    const exact = chains.filter((c) => c.match.serverNames.includes(sni));
    if (exact.length > 0) return exact;
    let best = 0;
    let winners: FilterChain[] = [];
    for (const c of chains) {
      for (const n of c.match.serverNames) {
        if (!n.startsWith('*.') || !sni.endsWith(n.slice(1)) || n.length < best) continue;
        if (n.length > best) winners = [];
        best = n.length;
        if (!winners.includes(c)) winners.push(c);
      }
    }
    if (winners.length > 0) return winners;
  }
  return chains.filter((c) => c.match.serverNames.length === 0);
}

/** Chains listing one of the offered ALPN protocols, else the ones that list none. */
function narrowAlpn(chains: Chains, offered: readonly string[] | undefined): Chains {
  if (offered && offered.length > 0) {
    const hit = chains.filter((c) => c.match.applicationProtocols.some((p) => offered.includes(p)));
    if (hit.length > 0) return hit;
  }
  return chains.filter((c) => c.match.applicationProtocols.length === 0);
}

type Chains = readonly FilterChain[];

/** Keeps the chains that name `value` exactly, else the ones that leave the criterion open. */
function narrowExact<T>(chains: Chains, get: (c: FilterChain) => T | undefined, value: T): Chains {
  const exact = chains.filter((c) => get(c) === value);
  return exact.length > 0 ? exact : chains.filter((c) => get(c) === undefined);
}

/** Keeps the chains with the longest prefix containing `ip`, else the ones with no ranges. */
function narrowCidr(chains: Chains, get: (c: FilterChain) => readonly CidrRange[], ip: bigint | undefined): Chains {
  let best = -1;
  let winners: FilterChain[] = [];
  for (const c of chains) {
    const len = longestMatch(ip, get(c));
    if (len > best) {
      best = len;
      winners = [c];
    } else if (len === best && len >= 0) winners.push(c);
  }
  return best >= 0 ? winners : chains.filter((c) => get(c).length === 0);
}

/**
 * Envoy's filter chain match: criteria are applied in a fixed order, the most specific candidate wins
 * at each step, and there is no backtracking; nothing left means the default chain. SNI and ALPN come
 * from the TLS inspector (listener/tls-inspector.ts) when a listener's chains ask for them.
 */
export function matchFilterChain(listener: Listener, facts: ConnectionFacts): FilterChain | undefined {
  let c: Chains = listener.filterChains;
  c = narrowExact(c, (x) => x.match.destinationPort, facts.destination.port);
  c = narrowCidr(c, (x) => x.match.prefixRanges, ipToBigInt(facts.destination.address));
  c = narrowServerName(c, facts.serverName);
  c = narrowExact(c, (x) => x.match.transportProtocol, facts.transportProtocol);
  c = narrowAlpn(c, facts.applicationProtocols);
  c = narrowCidr(c, (x) => x.match.sourcePrefixRanges, ipToBigInt(facts.source.address));
  c = c.filter((x) => x.match.sourcePorts.length === 0 || x.match.sourcePorts.includes(facts.source.port));
  const specific = c.filter((x) => x.match.sourcePorts.length > 0);
  return (specific.length > 0 ? specific : c)[0] ?? listener.defaultFilterChain;
}
