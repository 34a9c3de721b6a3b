import type { RouteConfiguration, VirtualHost } from '../config/model.js';

/**
 * Envoy's domain search: an exact domain first, then the longest `*.suffix`, then the longest
 * `prefix*`, and `*` only as the last resort. Compiled once per RouteConfiguration.
 */
export class VirtualHostIndex {
  private readonly exact = new Map<string, VirtualHost>();
  private readonly suffixes: [string, VirtualHost][] = [];
  private readonly prefixes: [string, VirtualHost][] = [];
  readonly fallback: VirtualHost | undefined;
  /** False when `*` is the only domain: then names need not be looked up at all. */
  readonly hasNames: boolean;
  private readonly cache = new Map<string, VirtualHost | null>();

  constructor(readonly config: RouteConfiguration) {
    let star: VirtualHost | undefined;
    for (const vh of config.virtualHosts) {
      for (const d of vh.domains) {
        if (d === '*') star ??= vh;
        else if (d.startsWith('*')) this.suffixes.push([d.slice(1), vh]);
        else if (d.endsWith('*')) this.prefixes.push([d.slice(0, -1), vh]);
        else if (!this.exact.has(d)) this.exact.set(d, vh);
      }
    }
    this.suffixes.sort((a, b) => b[0].length - a[0].length);
    this.prefixes.sort((a, b) => b[0].length - a[0].length);
    this.fallback = star;
    this.hasNames = this.exact.size + this.suffixes.length + this.prefixes.length > 0;
  }

  /** The virtual host for one name, without the `*` fallback; memoised because names repeat. */
  find(name: string): VirtualHost | undefined {
    let hit = this.cache.get(name);
    if (hit === undefined) {
      const n = name.toLowerCase();
      hit = this.exact.get(n) ?? this.suffixes.find(([s]) => n.endsWith(s) && n.length > s.length)?.[1] ?? this.prefixes.find(([p]) => n.startsWith(p) && n.length > p.length)?.[1] ?? null;
      if (this.cache.size > 10_000) this.cache.clear(); // names come from callers: keep the memo bounded
      this.cache.set(name, hit);
    }
    return hit ?? undefined;
  }

  /** The first candidate with a specific match wins; `*` only when none has one. */
  select(candidates: readonly (string | undefined)[]): VirtualHost | undefined {
    for (const c of candidates) {
      if (c === undefined) continue;
      const vh = this.find(c);
      if (vh) return vh;
    }
    return this.fallback;
  }
}

const indexes = new WeakMap<RouteConfiguration, VirtualHostIndex>();

export function indexOf(config: RouteConfiguration): VirtualHostIndex {
  let idx = indexes.get(config);
  if (!idx) indexes.set(config, (idx = new VirtualHostIndex(config)));
  return idx;
}
