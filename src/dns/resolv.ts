import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

export interface Upstream {
  readonly host: string;
  readonly port: number;
}

export interface ResolvConf {
  readonly nameservers: readonly Upstream[];
  /** Search domains, lower-case, in order (the pod's namespace domain comes first in Kubernetes). */
  readonly search: readonly string[];
}

/** nameserver and search/domain lines of resolv.conf(5); a missing file reads as empty. */
export function parseResolvConf(text: string): ResolvConf {
  const nameservers: Upstream[] = [];
  let search: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'nameserver' && rest[0] && isIP(rest[0].replace(/%.*$/, '')) !== 0) nameservers.push({ host: rest[0], port: 53 });
    // The last search or domain line wins, as in glibc.
    else if (key === 'search' || key === 'domain') search = rest.map((d) => d.toLowerCase().replace(/\.$/, '')).filter((d) => d !== '');
  }
  return { nameservers, search };
}

export function readResolvConf(path = '/etc/resolv.conf'): ResolvConf {
  try {
    return parseResolvConf(readFileSync(path, 'utf8'));
  } catch {
    return { nameservers: [], search: [] };
  }
}

/** HOST, HOST:PORT, [V6] or [V6]:PORT; a bare IPv6 address is taken whole. */
export function parseHostPort(value: string, defaultPort: number, what: string): Upstream {
  const v = value.trim();
  let host = v;
  let port = String(defaultPort);
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(v);
  if (bracket) {
    host = bracket[1]!;
    port = bracket[2] ?? port;
  } else if (isIP(v) !== 6) {
    const colon = v.lastIndexOf(':');
    if (colon >= 0) {
      host = v.slice(0, colon);
      port = v.slice(colon + 1);
    }
  }
  const n = Number(port);
  if (host === '' || !/^\d+$/.test(port) || n < 1 || n > 65535) throw new Error(`${what}: expected HOST[:PORT], got "${value}"`);
  return { host, port: n };
}
