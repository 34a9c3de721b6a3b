// Configuration for pod traffic capture, mirroring istio-iptables' flags so that the
// arguments Istio's injector writes for istio-init work unchanged with `xsidecar iptables`.
import { isIP } from 'node:net';

export type InterceptionMode = 'REDIRECT' | 'TPROXY';
/** '*' means "everything"; an empty list disables the feature. */
export type Wildcard<T> = '*' | T[];

export interface CaptureConfig {
  /** -p: outbound listener that all captured outbound TCP is redirected to. */
  proxyPort: number;
  /** -z: inbound listener that all captured inbound TCP is redirected to. */
  inboundCapturePort: number;
  /** -e: HBONE tunnel port, never redirected. */
  inboundTunnelPort: number;
  /** -u: UIDs whose traffic is the proxy's own and must not be captured again. */
  proxyUid: number[];
  /** -g: as proxyUid; defaults to the UIDs when not given (istio does the same). */
  proxyGid: number[];
  /** -m */
  interceptionMode: InterceptionMode;
  /** -b */
  inboundPorts: Wildcard<number>;
  /** -d: only meaningful when inboundPorts is '*'. */
  inboundPortsExclude: number[];
  /** -q */
  outboundPorts: number[];
  /** -o */
  outboundPortsExclude: number[];
  /** -i */
  outboundIpRanges: Wildcard<string>;
  /** -x */
  outboundIpRangesExclude: string[];
  /** -c: neither inbound nor outbound traffic on these NICs is captured. */
  excludeInterfaces: string[];
  /** -k: inbound traffic from these (VM) interfaces is treated as outbound. */
  rerouteVirtualInterfaces: string[];
  /** -t */
  tproxyMark: number;
  /** -r */
  tproxyRouteTable: number;
  /** --redirect-dns: send DNS to the agent's resolver on 15053. */
  redirectDns: boolean;
  /** --capture-all-dns: capture port 53 to any server, not just those in resolv.conf. */
  captureAllDns: boolean;
  /** Filled from /etc/resolv.conf (see loadDnsServers) when redirectDns && !captureAllDns. */
  dnsServersV4: string[];
  dnsServersV6: string[];
  /** --drop-invalid: drop conntrack-INVALID packets instead of letting them reset connections. */
  dropInvalid: boolean;
  /** --ipv6: also program ip6tables (istio infers this from the pod IP). */
  enableIPv6: boolean;
  /** Istio's ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR. */
  hostIPv4LoopbackCidr: string;
  /** -n/--dry-run */
  dryRun: boolean;
  /** --clean/--cleanup-only */
  clean: boolean;
  /** --reconcile: remove existing Istio rules before applying instead of failing on them. */
  reconcile: boolean;
}

/** Port the agent's DNS proxy listens on; fixed in Istio as well. */
export const DNS_CAPTURE_PORT = 15053;

/** Defaults match what Istio's sidecar injector passes to istio-init. */
export function defaultCaptureConfig(): CaptureConfig {
  return {
    proxyPort: 15001,
    inboundCapturePort: 15006,
    inboundTunnelPort: 15008,
    proxyUid: [1337],
    proxyGid: [1337],
    interceptionMode: 'REDIRECT',
    inboundPorts: '*',
    inboundPortsExclude: [15090, 15021, 15020],
    outboundPorts: [],
    outboundPortsExclude: [],
    outboundIpRanges: '*',
    outboundIpRangesExclude: [],
    excludeInterfaces: [],
    rerouteVirtualInterfaces: [],
    tproxyMark: 1337,
    tproxyRouteTable: 133,
    redirectDns: false,
    captureAllDns: false,
    dnsServersV4: [],
    dnsServersV6: [],
    dropInvalid: false,
    enableIPv6: false,
    hostIPv4LoopbackCidr: '127.0.0.1/32',
    dryRun: false,
    clean: false,
    reconcile: false,
  };
}

interface FlagSpec {
  long: string;
  short?: string;
  help: string;
  /** Boolean flags take no value unless written as --flag=value. */
  bool?: boolean;
  set(cfg: CaptureConfig, value: string, flag: string): void;
}

// Short letters follow istio-iptables (pkg/cmd/root.go), not intuition: -q is outbound
// ports, -c excluded NICs, -k virtual NICs, -t/-r the TPROXY mark/table.
const FLAGS: FlagSpec[] = [
  { long: 'envoy-port', short: 'p', help: 'outbound capture port (15001)',
    set: (c, v, f) => { c.proxyPort = parsePort(v, f); } },
  { long: 'inbound-capture-port', short: 'z', help: 'inbound capture port (15006)',
    set: (c, v, f) => { c.inboundCapturePort = parsePort(v, f); } },
  { long: 'inbound-tunnel-port', short: 'e', help: 'tunnel port never captured (15008)',
    set: (c, v, f) => { c.inboundTunnelPort = parsePort(v, f); } },
  { long: 'proxy-uid', short: 'u', help: 'proxy UIDs, comma separated (1337)',
    set: (c, v, f) => { c.proxyUid = parseIds(v, f); } },
  { long: 'proxy-gid', short: 'g', help: 'proxy GIDs, comma separated (defaults to the UIDs)',
    set: (c, v, f) => { c.proxyGid = parseIds(v, f); } },
  { long: 'istio-inbound-interception-mode', short: 'm', help: 'REDIRECT or TPROXY (REDIRECT)',
    set: (c, v, f) => { c.interceptionMode = parseMode(v, f); } },
  { long: 'istio-inbound-ports', short: 'b', help: "inbound ports to capture, '*' or list ('*')",
    set: (c, v, f) => { c.inboundPorts = v.trim() === '*' ? '*' : parsePorts(v, f); } },
  { long: 'istio-local-exclude-ports', short: 'd', help: 'inbound ports not captured (15090,15021,15020)',
    set: (c, v, f) => { c.inboundPortsExclude = parsePorts(v, f); } },
  { long: 'istio-outbound-ports', short: 'q', help: 'outbound ports always captured',
    set: (c, v, f) => { c.outboundPorts = parsePorts(v, f); } },
  { long: 'istio-local-outbound-ports-exclude', short: 'o', help: 'outbound ports not captured',
    set: (c, v, f) => { c.outboundPortsExclude = parsePorts(v, f); } },
  { long: 'istio-service-cidr', short: 'i', help: "outbound CIDRs to capture, '*' or list ('*')",
    set: (c, v, f) => { c.outboundIpRanges = v.trim() === '*' ? '*' : parseCidrs(v, f); } },
  { long: 'istio-service-exclude-cidr', short: 'x', help: 'outbound CIDRs not captured',
    set: (c, v, f) => {
      if (v.trim() === '*') throw new Error(`${f}: '*' is not allowed (it would exclude all outbound traffic)`);
      c.outboundIpRangesExclude = parseCidrs(v, f);
    } },
  { long: 'istio-exclude-interfaces', short: 'c', help: 'NICs whose traffic is never captured',
    set: (c, v, f) => { c.excludeInterfaces = parseInterfaces(v, f); } },
  { long: 'kube-virt-interfaces', short: 'k', help: 'virtual NICs whose inbound traffic is treated as outbound',
    set: (c, v, f) => { c.rerouteVirtualInterfaces = parseInterfaces(v, f); } },
  { long: 'istio-inbound-tproxy-mark', short: 't', help: 'TPROXY packet mark (1337)',
    set: (c, v, f) => { c.tproxyMark = parseUint32(v, f, 1); } },
  { long: 'istio-inbound-tproxy-route-table', short: 'r', help: 'TPROXY routing table (133)',
    set: (c, v, f) => { c.tproxyRouteTable = parseUint32(v, f, 1); } },
  { long: 'redirect-dns', bool: true, help: 'capture DNS to the agent on port 15053',
    set: (c, v, f) => { c.redirectDns = parseBool(v, f); } },
  { long: 'capture-all-dns', bool: true, help: 'with --redirect-dns: capture port 53 to any server',
    set: (c, v, f) => { c.captureAllDns = parseBool(v, f); } },
  { long: 'drop-invalid', bool: true, help: 'drop conntrack-INVALID inbound packets',
    set: (c, v, f) => { c.dropInvalid = parseBool(v, f); } },
  { long: 'ipv6', bool: true, help: 'also program ip6tables',
    set: (c, v, f) => { c.enableIPv6 = parseBool(v, f); } },
  { long: 'dry-run', short: 'n', bool: true, help: 'print the rules instead of applying them',
    set: (c, v, f) => { c.dryRun = parseBool(v, f); } },
  { long: 'clean', bool: true, help: 'remove Istio capture rules instead of applying them',
    set: (c, v, f) => { c.clean = parseBool(v, f); } },
  { long: 'cleanup-only', bool: true, help: 'alias of --clean (istio-iptables name)',
    set: (c, v, f) => { c.clean = parseBool(v, f); } },
  { long: 'reconcile', bool: true, help: 'remove existing Istio rules before applying',
    set: (c, v, f) => { c.reconcile = parseBool(v, f); } },
];

export function captureUsage(): string {
  const lines = FLAGS.map((s) => {
    const names = (s.short ? `-${s.short}, ` : '    ') + `--${s.long}` + (s.bool ? '' : ' VALUE');
    return `  ${names.padEnd(50)} ${s.help}`;
  });
  return ['Usage: xsidecar iptables [flags]', '', ...lines, ''].join('\n');
}

/** Parses istio-iptables style arguments; throws an Error naming the offending flag. */
export function parseCaptureArgs(argv: string[]): CaptureConfig {
  const cfg = defaultCaptureConfig();
  let gidGiven = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const m = /^(--?)([^=]+)(?:=(.*))?$/s.exec(arg);
    if (!m || arg === '-' || arg === '--') throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    const [, dashes] = m;
    let [, , name, inline] = m;
    // pflag also accepts a value glued to a short flag: -p15001.
    if (dashes === '-' && name.length > 1 && inline === undefined) [name, inline] = [name[0], name.slice(1)];
    const spec = dashes === '--' ? FLAGS.find((s) => s.long === name) : FLAGS.find((s) => s.short === name);
    if (!spec) throw new Error(`unknown flag ${dashes}${name}`);
    const flag = spec.short ? `--${spec.long} (-${spec.short})` : `--${spec.long}`;
    let value = inline;
    if (value === undefined) {
      if (spec.bool) value = 'true';
      else if (i + 1 < argv.length) value = argv[++i];
      else throw new Error(`${flag} needs a value`);
    }
    spec.set(cfg, value, flag);
    if (spec.long === 'proxy-gid') gidGiven = true;
  }
  if (!gidGiven) cfg.proxyGid = [...cfg.proxyUid];
  if (cfg.dryRun && cfg.clean) throw new Error('--dry-run and --clean cannot be combined');
  return cfg;
}

/**
 * Istio only redirects DNS to servers listed in resolv.conf (unless capturing all DNS),
 * so that local resolvers such as dnsmasq do not loop back into the agent.
 */
export function loadDnsServers(cfg: CaptureConfig, resolvConf: string): CaptureConfig {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const family = isIP(m[1].replace(/%.*$/, ''));
    if (family === 4) v4.push(m[1]);
    else if (family === 6) v6.push(m[1]);
  }
  return { ...cfg, dnsServersV4: v4, dnsServersV6: v6 };
}

/** Comma lists tolerate empty items ("6000,7000,") like istio's config.Split. */
function splitList(value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function parsePort(value: string, flag: string): number {
  const v = value.trim();
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) {
    throw new Error(`${flag}: invalid port ${JSON.stringify(value)} (expected an integer 1-65535)`);
  }
  return n;
}

function parsePorts(value: string, flag: string): number[] {
  return splitList(value).map((p) => parsePort(p, flag));
}

function parseIds(value: string, flag: string): number[] {
  const ids = splitList(value).map((id) => {
    if (!/^\d+$/.test(id) || Number(id) > 0xffffffff) {
      throw new Error(`${flag}: invalid id ${JSON.stringify(id)} (expected a numeric uid/gid)`);
    }
    return Number(id);
  });
  if (ids.length === 0) throw new Error(`${flag}: at least one id is required`);
  return ids;
}

function parseUint32(value: string, flag: string, min: number): number {
  const v = value.trim();
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > 0xffffffff) {
    throw new Error(`${flag}: invalid value ${JSON.stringify(value)} (expected an integer ${min}-4294967295)`);
  }
  return n;
}

function parseMode(value: string, flag: string): InterceptionMode {
  if (value === 'REDIRECT' || value === 'TPROXY') return value;
  throw new Error(`${flag}: unknown interception mode ${JSON.stringify(value)} (expected REDIRECT or TPROXY)`);
}

function parseBool(value: string, flag: string): boolean {
  if (value === 'true' || value === '1') return true;
  if (value === 'false' || value === '0') return false;
  throw new Error(`${flag}: invalid boolean ${JSON.stringify(value)}`);
}

function parseCidrs(value: string, flag: string): string[] {
  return splitList(value).map((cidr) => {
    if (!isCidr(cidr)) throw new Error(`${flag}: invalid CIDR ${JSON.stringify(cidr)} (expected e.g. 10.0.0.0/8)`);
    return cidr;
  });
}

export function isCidr(cidr: string): boolean {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(cidr);
  if (!m) return false;
  const family = isIP(m[1]);
  const bits = Number(m[2]);
  return (family === 4 && bits <= 32) || (family === 6 && bits <= 128);
}

function parseInterfaces(value: string, flag: string): string[] {
  return splitList(value).map((nic) => {
    // Linux IFNAMSIZ is 16 including the NUL; '/' and whitespace are never valid.
    if (nic.length > 15 || /[\s/:]/.test(nic) || nic === '.' || nic === '..') {
      throw new Error(`${flag}: invalid interface name ${JSON.stringify(nic)}`);
    }
    return nic;
  });
}
