/**
 * The names the proxy answers itself, merged from three sources: Istio's NameTable (NDS), the bootstrap's
 * inline DNS table, and the registrar's own records. Rebuilt whole on each change (a few thousand names at
 * most) so a lookup is one Map get, and a lookup never sees half of an update.
 */
import { isIP } from 'node:net';
import { CLASS, localAnswer, nameKey, type Query, TYPE } from './wire.js';

/** The shape of istio.networking.nds.v1.NameTable as xds/ hands it over (structural: dns/ does not import xds/). */
export interface NameInfoLike {
  readonly ips: readonly string[];
  readonly registry?: string;
  readonly shortname?: string;
  readonly namespace?: string;
}
export interface NameTableLike {
  readonly table: Readonly<Record<string, NameInfoLike>>;
}

export interface StaticName {
  readonly name: string;
  readonly addresses: readonly string[];
  /** Envoy's answer_ttl; the table default when absent. */
  readonly ttlSeconds?: number;
}

export type Source = 'bootstrap' | 'registrar' | 'nametable';

export interface Entry {
  readonly v4: readonly Buffer[];
  readonly v6: readonly Buffer[];
  readonly ttl: number;
  readonly source: Source;
}

export interface TableOptions {
  /** The pod's namespace: bare service names of this namespace resolve, as in Istio's agent. */
  readonly namespace?: string;
  /** resolv.conf search domains; a query for NAME.<first> is answered as NAME. */
  readonly search: readonly string[];
  /** TTL of local answers in seconds (Istio's agent uses 30). */
  readonly ttl: number;
}

/** What a lookup needs, as handed to the UDP worker (src/dns/udp-worker.ts) on each change. */
export interface TableSnapshot {
  readonly entries: ReadonlyMap<string, Entry>;
  readonly firstSearch: string | undefined;
}

/** The entry for a name key (wire form, see nameKey), directly or as NAME.<first search domain>. */
export function lookupIn(t: TableSnapshot, key: string): Entry | undefined {
  const e = t.entries.get(key);
  const suffix = t.firstSearch;
  if (e || !suffix || key.length <= suffix.length || !key.endsWith(suffix)) return e;
  return t.entries.get(`${key.slice(0, -suffix.length)}\u0000`);
}

/**
 * The authoritative answer when the table holds the asked name (a standard query of class IN), else
 * undefined. A known name with nothing of the asked type is NOERROR with no answer, never NXDOMAIN.
 */
export function tableAnswer(t: TableSnapshot, req: Buffer, q: Query, limit: number): Buffer | undefined {
  if (q.key === undefined || q.qclass !== CLASS.IN || (q.flags & 0x7800) !== 0) return undefined;
  const e = lookupIn(t, q.key);
  if (!e) return undefined;
  const addrs = q.qtype === TYPE.A || q.qtype === TYPE.ANY ? e.v4 : q.qtype === TYPE.AAAA ? e.v6 : [];
  return localAnswer(req, q, addrs, e.ttl, limit);
}

export const normalizeName = (n: string) => n.trim().toLowerCase().replace(/\.$/, '');

export class LocalTable {
  private snap: TableSnapshot;
  private changed: ((t: TableSnapshot) => void) | undefined;
  private nameTable: NameTableLike | undefined;
  private statics: readonly StaticName[] = [];
  private registered: readonly StaticName[] = [];

  constructor(private readonly opts: TableOptions) {
    // The first search domain as a key suffix (its labels and the root): stripped, it leaves NAME's labels.
    this.snap = { entries: new Map(), firstSearch: opts.search[0] ? nameKey(opts.search[0]) : undefined };
  }

  get size(): number {
    return this.snap.entries.size;
  }

  get snapshot(): TableSnapshot {
    return this.snap;
  }

  /** One listener (the DNS proxy), told of every rebuilt table. */
  onChange(cb: ((t: TableSnapshot) => void) | undefined): void {
    this.changed = cb;
  }

  setNameTable(t: NameTableLike): void {
    this.nameTable = t;
    this.rebuild();
  }

  setStatic(names: readonly StaticName[]): void {
    this.statics = names;
    this.rebuild();
  }

  setRegistered(names: readonly StaticName[]): void {
    this.registered = names;
    this.rebuild();
  }

  /** The entry for a name key (wire form, see nameKey), directly or as NAME.<first search domain>. */
  lookup(key: string): Entry | undefined {
    return lookupIn(this.snap, key);
  }

  /** Addresses of a name as text (for the registrar's ClusterIP lookup by service name). */
  addressesOf(name: string): string[] {
    let key: string;
    try {
      key = nameKey(normalizeName(name));
    } catch {
      return [];
    }
    const e = this.lookup(key);
    return e ? [...e.v4, ...e.v6].map(ipToString) : [];
  }

  private rebuild(): void {
    const next = new Map<string, Entry>();
    // Later sources do not override earlier ones: the operator's bootstrap table first, then our own records.
    const put = (name: string, ips: readonly string[], ttl: number, source: Source) => {
      let key: string;
      try {
        key = nameKey(normalizeName(name));
      } catch {
        return; // not a valid DNS name: nobody can ask for it
      }
      if (key === '\u0000' || next.has(key)) return;
      const v4: Buffer[] = [];
      const v6: Buffer[] = [];
      for (const ip of ips) {
        const b = ipToBuffer(ip);
        if (b?.length === 4) v4.push(b);
        else if (b) v6.push(b);
      }
      next.set(key, { v4, v6, ttl, source });
    };
    for (const s of this.statics) put(s.name, s.addresses, s.ttlSeconds ?? this.opts.ttl, 'bootstrap');
    for (const s of this.registered) put(s.name, s.addresses, s.ttlSeconds ?? this.opts.ttl, 'registrar');
    for (const [host, info] of Object.entries(this.nameTable?.table ?? {})) {
      for (const alt of altHosts(host, info, this.opts.namespace)) put(alt, info.ips, this.opts.ttl, 'nametable');
    }
    this.snap = { entries: next, firstSearch: this.snap.firstSearch };
    this.changed?.(this.snap);
  }
}

/**
 * The names Istio's agent answers for a NameTable entry (pkg/dns/client generateAltHosts): the FQDN, and
 * for a Kubernetes service `name.ns`, `name.ns.svc` and, in the pod's own namespace, `name`.
 */
export function altHosts(host: string, info: NameInfoLike, namespace: string | undefined): string[] {
  const out = [host];
  const short = info.shortname;
  const ns = info.namespace;
  if (info.registry !== 'Kubernetes' || !short || !ns) return out;
  const prefix = `${short}.${ns}.`.toLowerCase();
  if (!host.toLowerCase().startsWith(prefix)) return out;
  const domainFirst = host.slice(prefix.length).split('.')[0];
  out.push(`${short}.${ns}`);
  if (domainFirst) out.push(`${short}.${ns}.${domainFirst}`);
  if (namespace === ns) out.push(short);
  return out;
}

export function ipToBuffer(ip: string): Buffer | undefined {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family !== 6) return undefined;
  let text = ip.replace(/%.*$/, '');
  // An embedded IPv4 tail becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const b = v4[1]!.split('.').map(Number);
    text = `${text.slice(0, -v4[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

export function ipToString(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // The WHATWG URL parser writes the canonical (RFC 5952) form.
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1);
}
