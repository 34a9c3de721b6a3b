import type { CidrRange, FilterChain, Listener, SocketAddress } from '../config/model.js';
import { ipToBigInt, longestMatch } from './cidr.js';

export interface ConnectionFacts {
  readonly destination: SocketAddress;
  readonly source: SocketAddress;
  /** 'raw_buffer' unless a sniffer saw a TLS ClientHello. */
  readonly transportProtocol: string;
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
 * at each step, and there is no backtracking; nothing left means the default chain. We never see an SNI
 * or ALPN, so chains that require one do not match.
 */
export function matchFilterChain(listener: Listener, facts: ConnectionFacts): FilterChain | undefined {
  let c: Chains = listener.filterChains;
  c = narrowExact(c, (x) => x.match.destinationPort, facts.destination.port);
  c = narrowCidr(c, (x) => x.match.prefixRanges, ipToBigInt(facts.destination.address));
  c = c.filter((x) => x.match.serverNames.length === 0);
  c = narrowExact(c, (x) => x.match.transportProtocol, facts.transportProtocol);
  c = c.filter((x) => x.match.applicationProtocols.length === 0);
  c = narrowCidr(c, (x) => x.match.sourcePrefixRanges, ipToBigInt(facts.source.address));
  c = c.filter((x) => x.match.sourcePorts.length === 0 || x.match.sourcePorts.includes(facts.source.port));
  const specific = c.filter((x) => x.match.sourcePorts.length > 0);
  return (specific.length > 0 ? specific : c)[0] ?? listener.defaultFilterChain;
}
