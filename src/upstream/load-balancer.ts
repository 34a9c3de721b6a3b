import type { LbPolicy } from '../config/model.js';
import type { Host } from './host.js';

/** Picks one of the usable hosts; `hosts` is never empty. */
export interface LoadBalancer {
  pick(hosts: readonly Host[]): Host;
}

const allSameWeight = (hosts: readonly Host[]) => hosts.every((h) => h.weight === hosts[0]!.weight);

/** Smooth weighted round robin (as nginx does): even spread, weights honoured, no bursts. */
class RoundRobin implements LoadBalancer {
  private next = 0;
  private readonly current = new Map<Host, number>();

  pick(hosts: readonly Host[]): Host {
    if (allSameWeight(hosts)) return hosts[this.next++ % hosts.length]!;
    let total = 0;
    let best: Host = hosts[0]!;
    let bestScore = -Infinity;
    for (const h of hosts) {
      const score = (this.current.get(h) ?? 0) + h.weight;
      this.current.set(h, score);
      total += h.weight;
      if (score > bestScore) {
        bestScore = score;
        best = h;
      }
    }
    this.current.set(best, bestScore - total);
    return best;
  }
}

function weightedRandom(hosts: readonly Host[]): Host {
  if (allSameWeight(hosts)) return hosts[Math.floor(Math.random() * hosts.length)]!;
  let total = 0;
  for (const h of hosts) total += h.weight;
  let r = Math.random() * total;
  for (const h of hosts) {
    r -= h.weight;
    if (r < 0) return h;
  }
  return hosts[hosts.length - 1]!;
}

class RandomLb implements LoadBalancer {
  pick(hosts: readonly Host[]): Host {
    return weightedRandom(hosts);
  }
}

/** Envoy's default: power of two choices on in-flight requests, scaled by weight. */
class LeastRequest implements LoadBalancer {
  pick(hosts: readonly Host[]): Host {
    if (hosts.length === 1) return hosts[0]!;
    const a = weightedRandom(hosts);
    let b = weightedRandom(hosts);
    if (b === a) b = hosts[(hosts.indexOf(a) + 1) % hosts.length]!;
    return (a.active + 1) / a.weight <= (b.active + 1) / b.weight ? a : b;
  }
}

const factories: Record<LbPolicy, () => LoadBalancer> = {
  ROUND_ROBIN: () => new RoundRobin(),
  LEAST_REQUEST: () => new LeastRequest(),
  RANDOM: () => new RandomLb(),
};

export const createLoadBalancer = (policy: LbPolicy): LoadBalancer => factories[policy]();
