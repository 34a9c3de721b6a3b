import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { SocketAddress } from '../config/model.js';
import { http } from '../sys/builtins.js';

export interface Route {
  readonly method: 'GET' | 'POST';
  readonly handle: (req: IncomingMessage, url: URL) => Reply | Promise<Reply>;
}

export interface Reply {
  readonly status: number;
  readonly body: string | object;
  readonly type?: string;
}

export const text = (body: string, status = 200): Reply => ({ status, body, type: 'text/plain; charset=utf-8' });
export const json = (body: object, status = 200): Reply => ({ status, body, type: 'application/json' });

function send(res: ServerResponse, r: Reply): void {
  const body = typeof r.body === 'string' ? r.body : `${JSON.stringify(r.body, null, 2)}\n`;
  res.writeHead(r.status, { 'content-type': r.type ?? 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/** A tiny path router: admin endpoints are few and fixed, so no framework. */
export function serveRoutes(addr: SocketAddress, routes: Record<string, Route>): Promise<Server> {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    const route = routes[url.pathname];
    try {
      if (!route) send(res, text(`no such admin path: ${url.pathname}\n`, 404));
      else if (route.method !== req.method && !(route.method === 'GET' && req.method === 'HEAD')) {
        send(res, text(`${url.pathname} requires ${route.method}\n`, 405));
      } else send(res, await route.handle(req, url));
    } catch (e) {
      send(res, text(`${(e as Error).message}\n`, 500));
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.address, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

export function boundAddress(server: Server): string {
  const a = server.address();
  return typeof a === 'object' && a ? `${a.address}:${a.port}` : String(a);
}
