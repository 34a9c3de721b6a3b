import type { Snapshot } from '../config/snapshot.js';

/** An ISTIO_MUTUAL cluster or a TLS inbound chain: the data path then needs the workload certificate. */
export function snapshotNeedsIdentity(s: Snapshot): boolean {
  for (const c of s.clusters.values()) {
    if (c.transportSocket?.tls || c.transportSocketMatches?.some((m) => m.tls)) return true;
  }
  for (const l of s.listeners.values()) {
    if (l.filterChains.some((c) => c.tls) || l.defaultFilterChain?.tls) return true;
  }
  return false;
}
