import type { HeaderMatcher, Route, RouteAction, RouteConfiguration, SocketAddress, VirtualHost } from '../config/model.js';
import { matchString } from '../config/string-match.js';
import { indexOf } from './virtual-hosts.js';

/** What routing reads from a request: the codec's lazily decoded headers. */
export interface RequestHeaders {
  header(name: string): string | undefined;
}

/** An RPC request's path, so Istio's `uri` matches work: /service/method. */
export const rpcPath = (req: RequestHeaders) => `/${req.header('service') ?? ''}/${req.header('method') ?? ''}`;

function matchHeader(h: HeaderMatcher, req: RequestHeaders): boolean {
  const value = h.name === ':path' ? rpcPath(req) : req.header(h.name);
  const ok = h.match ? value !== undefined && matchString(h.match, value) : (value !== undefined) === h.present;
  return ok !== h.invert;
}

export function matchRoute(route: Route, req: RequestHeaders): boolean {
  const p = route.match.path;
  // Istio's catch-all is prefix "/": skip building the path for it.
  if (p && !(p.kind === 'prefix' && p.value === '/') && !matchString(p, rpcPath(req))) return false;
  const headers = route.match.headers;
  for (let i = 0; i < headers.length; i++) if (!matchHeader(headers[i]!, req)) return false;
  return true;
}

/** Host names to look a connection's original destination up by: `ip:port`, then `ip`. */
export const destinationKeys = (d: SocketAddress): readonly string[] => [`${d.address}:${d.port}`, d.address];

/** The virtual host named by a connection's original destination, if any; callers cache it per connection. */
export function destinationHost(config: RouteConfiguration, dstKeys: readonly string[]): VirtualHost | undefined {
  const idx = indexOf(config);
  for (let i = 0; i < dstKeys.length; i++) {
    const vh = idx.find(dstKeys[i]!);
    if (vh) return vh;
  }
  return undefined;
}

/**
 * The virtual host is chosen by the connection's original destination (Istio lists the ClusterIP among a
 * service's domains; `dstHost` from destinationHost), else by the frame's service or interface name (DNS
 * universal addressing: the name is the domain), else `*`. Then the first route whose match fits the
 * frame's headers wins.
 */
export function selectRoute(config: RouteConfiguration, req: RequestHeaders, dstHost: VirtualHost | undefined): RouteAction | undefined {
  let vh = dstHost;
  if (!vh) {
    const idx = indexOf(config);
    if (idx.hasNames) {
      const service = req.header('service');
      if (service !== undefined) vh = idx.find(service);
      const iface = vh ? undefined : req.header('interface');
      if (iface !== undefined) vh = idx.find(iface);
    }
    vh ??= idx.fallback;
  }
  if (!vh) return undefined;
  const routes = vh.routes;
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i]!;
    if (r.action && matchRoute(r, req)) return r.action;
  }
  return undefined;
}
