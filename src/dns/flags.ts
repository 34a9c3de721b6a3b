/**
 * The DNS flags of `xsidecar run`, each with its environment variable (for injection into a pod spec).
 * Flags win over the environment. Errors name the flag.
 */
import { isIP } from 'node:net';
import type { DnsFlags, RegistrarFlags } from './dns-service.js';
import { parseHostPort } from './resolv.js';
import { loadKeyFile } from './tsig.js';

export const DNS_FLAG_OPTIONS = {
  'dns-port': { type: 'string' },
  'dns-upstream': { type: 'string' },
  'dns-udp-worker': { type: 'string' },
  'dns-udp-worker-rate': { type: 'string' },
  'dns-udp-worker-idle': { type: 'string' },
  'dns-update-server': { type: 'string' },
  'dns-update-zone': { type: 'string' },
  'dns-update-key': { type: 'string' },
  'dns-update-ttl': { type: 'string' },
  'dns-update-interval': { type: 'string' },
  'dns-interfaces': { type: 'string' },
  'dns-service-ip': { type: 'string' },
  'dns-service-name': { type: 'string' },
} as const;

export const DNS_USAGE =
  '[--dns-port 15053 (0: off)] [--dns-upstream IP[:PORT],...] [--dns-udp-worker auto|on|off --dns-udp-worker-rate 2000 --dns-udp-worker-idle 30s] [--dns-update-server HOST:PORT --dns-update-zone ZONE --dns-update-key FILE ' +
  '--dns-interfaces a.b.C,... (XSIDECAR_INTERFACES) --dns-service-ip IP (XSIDECAR_SERVICE_IP) | --dns-service-name NAME --dns-update-ttl 30s --dns-update-interval 30s]';

type Values = Partial<Record<keyof typeof DNS_FLAG_OPTIONS, string>>;
type Env = Readonly<Record<string, string | undefined>>;

const list = (v: string | undefined) => (v ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '');

function seconds(v: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new Error(`${flag}: expected a duration such as "30s", got "${v}"`);
  const n = Number(m[1]) * (m[2] === 'ms' ? 0.001 : m[2] === 'm' ? 60 : 1);
  if (n <= 0) throw new Error(`${flag}: must be positive`);
  return n;
}

export function dnsFlagsFrom(values: Values, env: Env): DnsFlags {
  let port: number | undefined;
  if (values['dns-port'] !== undefined) {
    port = Number(values['dns-port']);
    if (!/^\d+$/.test(values['dns-port']) || port > 65535) throw new Error(`--dns-port: expected 0..65535, got "${values['dns-port']}"`);
  }
  const upstreams = list(values['dns-upstream']);
  for (const u of upstreams) {
    // An upstream named by a hostname would need DNS to find DNS.
    if (isIP(parseHostPort(u, 53, '--dns-upstream').host) === 0) throw new Error(`--dns-upstream: expected an IP address, got "${u}"`);
  }
  // XSIDECAR_RESOLV_CONF: another resolv.conf for the search domains and upstreams (tests, unusual images).
  return { port, upstreams, resolvConfPath: env.XSIDECAR_RESOLV_CONF, udpWorker: udpWorkerFrom(values, env), registrar: registrarFrom(values, env) };
}

function udpWorkerFrom(values: Values, env: Env): DnsFlags['udpWorker'] {
  const mode = values['dns-udp-worker'] ?? env.XSIDECAR_DNS_UDP_WORKER ?? 'auto';
  if (mode !== 'auto' && mode !== 'on' && mode !== 'off') throw new Error(`--dns-udp-worker (XSIDECAR_DNS_UDP_WORKER): expected auto, on or off, got "${mode}"`);
  const rate = values['dns-udp-worker-rate'] ?? env.XSIDECAR_DNS_UDP_WORKER_RATE ?? '2000';
  if (!/^\d+$/.test(rate) || Number(rate) < 1) throw new Error(`--dns-udp-worker-rate (XSIDECAR_DNS_UDP_WORKER_RATE): expected queries per second (a positive integer), got "${rate}"`);
  const idle = seconds(values['dns-udp-worker-idle'] ?? env.XSIDECAR_DNS_UDP_WORKER_IDLE ?? '30s', '--dns-udp-worker-idle (XSIDECAR_DNS_UDP_WORKER_IDLE)');
  return { mode, upRate: Number(rate), idleMs: Math.round(idle * 1000) };
}

function registrarFrom(values: Values, env: Env): RegistrarFlags | undefined {
  const server = values['dns-update-server'] ?? env.XSIDECAR_DNS_UPDATE_SERVER;
  const zone = values['dns-update-zone'] ?? env.XSIDECAR_DNS_UPDATE_ZONE;
  const keyFile = values['dns-update-key'] ?? env.XSIDECAR_DNS_UPDATE_KEY;
  if (!server && !zone && !keyFile) return undefined;
  if (!server) throw new Error('--dns-update-server (XSIDECAR_DNS_UPDATE_SERVER) is required with --dns-update-zone/--dns-update-key');
  if (!zone) throw new Error('--dns-update-zone (XSIDECAR_DNS_UPDATE_ZONE) is required with --dns-update-server');
  if (!keyFile) throw new Error('--dns-update-key (XSIDECAR_DNS_UPDATE_KEY) is required with --dns-update-server: updates are always TSIG-signed');
  parseHostPort(server, 53, '--dns-update-server');
  const interfaces = list(values['dns-interfaces'] ?? env.XSIDECAR_INTERFACES);
  if (interfaces.length === 0) throw new Error('--dns-interfaces (XSIDECAR_INTERFACES) is required with --dns-update-server');
  for (const i of interfaces) {
    if (!/^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$/.test(i) || i.includes('..')) throw new Error(`--dns-interfaces: "${i}" is not a valid DNS name`);
  }
  const serviceIps = list(values['dns-service-ip'] ?? env.XSIDECAR_SERVICE_IP);
  for (const ip of serviceIps) if (isIP(ip) === 0) throw new Error(`--dns-service-ip (XSIDECAR_SERVICE_IP): "${ip}" is not an IP address`);
  const serviceName = values['dns-service-name'] ?? env.XSIDECAR_SERVICE_NAME;
  if (serviceIps.length === 0 && !serviceName) throw new Error('the registrar needs the app\'s ClusterIP: --dns-service-ip (XSIDECAR_SERVICE_IP) or --dns-service-name (XSIDECAR_SERVICE_NAME, looked up in the NameTable)');
  return {
    server,
    zone: zone.replace(/\.$/, ''),
    key: loadKeyFile(keyFile),
    interfaces,
    serviceIps,
    serviceName,
    ttlSeconds: Math.round(seconds(values['dns-update-ttl'] ?? env.XSIDECAR_DNS_UPDATE_TTL ?? '30s', '--dns-update-ttl')),
    intervalMs: Math.round(seconds(values['dns-update-interval'] ?? env.XSIDECAR_DNS_UPDATE_INTERVAL ?? '30s', '--dns-update-interval') * 1000),
  };
}
