// Builds Istio's sidecar capture rules as iptables-restore input. The rule order, chain
// creation order and table order follow istio-iptables (tools/istio-iptables/pkg/capture)
// exactly, so the output can be diffed against Istio's own golden files.
import { isIP } from 'node:net';
import { DNS_CAPTURE_PORT, type CaptureConfig } from './config.js';

export interface CapturePlan {
  /** iptables-restore input for IPv4 (use with --noflush). */
  iptables: string;
  /** ip6tables-restore input; only present when IPv6 is enabled. */
  ip6tables?: string;
  /** Full argv of the `ip` commands TPROXY needs (policy routing to lo). */
  ipRoutes: string[][];
}

export const ISTIO_CHAINS = {
  output: 'ISTIO_OUTPUT',
  outputDns: 'ISTIO_OUTPUT_DNS',
  inbound: 'ISTIO_INBOUND',
  divert: 'ISTIO_DIVERT',
  tproxy: 'ISTIO_TPROXY',
  redirect: 'ISTIO_REDIRECT',
  inRedirect: 'ISTIO_IN_REDIRECT',
  drop: 'ISTIO_DROP',
} as const;
const C = ISTIO_CHAINS;

/** Built-in chains and targets: never created with -N. */
export const BUILTIN_CHAINS = new Set(['INPUT', 'OUTPUT', 'FORWARD', 'PREROUTING', 'POSTROUTING', 'ACCEPT', 'RETURN', 'DROP']);

/** TPROXY marks proxy->app packets with this so inbound capture lets them through. */
const OUTBOUND_MARK = '1338';
/** Source address the inbound passthrough cluster binds to. */
const PASSTHROUGH_SRC = { v4: '127.0.0.6/32', v6: '::6/128' };
const LOOPBACK_V6 = '::1/128';

export interface Rule {
  table: string;
  chain: string;
  /** Full rule as written to iptables-restore, starting with -A/-I. */
  params: string[];
}

/** Collects rules per family the way istio's IptablesRuleBuilder does. */
class RuleSet {
  readonly v4: Rule[] = [];
  readonly v6: Rule[] = [];
  constructor(private readonly ipv6: boolean) {}

  appendV4(table: string, chain: string, ...p: string[]): void {
    this.v4.push({ table, chain, params: ['-A', chain, ...p] });
  }
  appendV6(table: string, chain: string, ...p: string[]): void {
    if (this.ipv6) this.v6.push({ table, chain, params: ['-A', chain, ...p] });
  }
  append(table: string, chain: string, ...p: string[]): void {
    this.appendV4(table, chain, ...p);
    this.appendV6(table, chain, ...p);
  }
  /** For rules that differ between families only by one address. */
  appendVersioned(table: string, chain: string, v4: string, v6: string, build: (ip: string) => string[]): void {
    this.appendV4(table, chain, ...build(v4));
    this.appendV6(table, chain, ...build(v6));
  }
  insertV4(table: string, chain: string, pos: number, ...p: string[]): void {
    this.v4.push({ table, chain, params: ['-I', chain, String(pos), ...p] });
  }
  insertV6(table: string, chain: string, pos: number, ...p: string[]): void {
    if (this.ipv6) this.v6.push({ table, chain, params: ['-I', chain, String(pos), ...p] });
  }
  insert(table: string, chain: string, pos: number, ...p: string[]): void {
    this.insertV4(table, chain, pos, ...p);
    this.insertV6(table, chain, pos, ...p);
  }
}

interface NetworkRange {
  wildcard: boolean;
  cidrs: string[];
  hasLoopback: boolean;
}

function splitFamilies(ranges: '*' | string[]): { v4: NetworkRange; v6: NetworkRange } {
  if (ranges === '*') {
    return { v4: { wildcard: true, cidrs: [], hasLoopback: false }, v6: { wildcard: true, cidrs: [], hasLoopback: false } };
  }
  const v4: NetworkRange = { wildcard: false, cidrs: [], hasLoopback: false };
  const v6: NetworkRange = { wildcard: false, cidrs: [], hasLoopback: false };
  for (const cidr of ranges) {
    const addr = cidr.split('/')[0];
    if (isIP(addr) === 4) {
      v4.cidrs.push(cidr);
      if (addr.startsWith('127.')) v4.hasLoopback = true;
    } else {
      v6.cidrs.push(cidr);
      if (new URL(`http://[${addr}]`).hostname === '[::1]') v6.hasLoopback = true;
    }
  }
  return { v4, v6 };
}

/** The per-family rules behind buildRules; cleanRules also uses them to find what to delete. */
export function buildRuleSet(cfg: CaptureConfig): { v4: Rule[]; v6: Rule[] } {
  if (cfg.outboundIpRangesExclude.includes('*')) throw new Error('outbound IP range exclusions cannot be "*"');
  const rs = new RuleSet(cfg.enableIPv6);
  const tproxy = cfg.interceptionMode === 'TPROXY';
  const loopV4 = cfg.hostIPv4LoopbackCidr;
  const uids = cfg.proxyUid.map(String);
  const gids = cfg.proxyGid.map(String);
  const tunnel = String(cfg.inboundTunnelPort);
  const mark = String(cfg.tproxyMark);
  const include = splitFamilies(cfg.outboundIpRanges);
  const exclude = splitFamilies(cfg.outboundIpRangesExclude);
  // Istio silently turns DNS capture off when there is nothing to capture it for.
  const redirectDns = cfg.redirectDns && (cfg.captureAllDns || cfg.dnsServersV4.length + cfg.dnsServersV6.length > 0);

  for (const nic of cfg.excludeInterfaces) {
    rs.append('nat', 'PREROUTING', '-i', nic, '-j', 'RETURN');
    rs.append('nat', 'OUTPUT', '-o', nic, '-j', 'RETURN');
  }
  if (tproxy) {
    for (const nic of cfg.excludeInterfaces) {
      rs.append('mangle', 'PREROUTING', '-i', nic, '-j', 'RETURN');
      rs.append('mangle', 'OUTPUT', '-o', nic, '-j', 'RETURN');
    }
  }
  for (const nic of cfg.rerouteVirtualInterfaces) rs.insert('nat', 'PREROUTING', 1, '-i', nic, '-j', 'RETURN');

  if (cfg.dropInvalid) {
    rs.append('mangle', 'PREROUTING', '-m', 'conntrack', '--ctstate', 'INVALID', '-j', C.drop);
    rs.append('mangle', C.drop, '-j', 'DROP');
  }

  rs.append('nat', C.inbound, '-p', 'tcp', '--dport', tunnel, '-j', 'RETURN');
  rs.append('nat', C.redirect, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(cfg.proxyPort));
  rs.append('nat', C.inRedirect, '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', String(cfg.inboundCapturePort));

  addInbound(rs, cfg);

  rs.append('nat', 'OUTPUT', '-j', C.output);
  // Port exclusions must come before the rules that send loopback traffic back to the proxy.
  for (const port of cfg.outboundPortsExclude) {
    rs.append('nat', C.output, '-p', 'tcp', '--dport', String(port), '-j', 'RETURN');
    rs.append('nat', C.output, '-p', 'udp', '--dport', String(port), '-j', 'RETURN');
  }
  rs.appendVersioned('nat', C.output, PASSTHROUGH_SRC.v4, PASSTHROUGH_SRC.v6, (src) => ['-o', 'lo', '-s', src, '-j', 'RETURN']);

  const keepAppLoopback = !include.v4.hasLoopback && !include.v6.hasLoopback;
  for (const [owner, ids] of [['--uid-owner', uids], ['--gid-owner', gids]] as const) {
    for (const id of ids) {
      // App -> service VIP -> own pod: route through the inbound listener via lo.
      // DNS on port 53 is exempt (only for UIDs, as in Istio) so the agent answers it directly.
      const skipPorts = redirectDns && owner === '--uid-owner'
        ? ['-m', 'multiport', '!', '--dports', `53,${tunnel}`]
        : ['!', '--dport', tunnel];
      rs.appendVersioned('nat', C.output, loopV4, LOOPBACK_V6, (lo) =>
        ['-o', 'lo', '!', '-d', lo, '-p', 'tcp', ...skipPorts, '-m', 'owner', owner, id, '-j', C.inRedirect]);
      if (keepAppLoopback) {
        // App -> own endpoint over lo stays direct; TCP DNS to a local resolver is still captured.
        const dnsExempt = redirectDns ? ['-p', 'tcp', '!', '--dport', '53'] : [];
        rs.append('nat', C.output, '-o', 'lo', ...dnsExempt, '-m', 'owner', '!', owner, id, '-j', 'RETURN');
      }
      // Never capture the proxy's own traffic (any protocol), or it would loop.
      rs.append('nat', C.output, '-m', 'owner', owner, id, '-j', 'RETURN');
    }
  }

  if (redirectDns) addDns(rs, cfg, uids, gids);

  // Container-to-container traffic on localhost is never captured.
  rs.appendVersioned('nat', C.output, loopV4, LOOPBACK_V6, (lo) => ['-d', lo, '-j', 'RETURN']);
  for (const cidr of exclude.v4.cidrs) rs.appendV4('nat', C.output, '-d', cidr, '-j', 'RETURN');
  for (const cidr of exclude.v6.cidrs) rs.appendV6('nat', C.output, '-d', cidr, '-j', 'RETURN');
  for (const port of cfg.outboundPorts) rs.append('nat', C.output, '-p', 'tcp', '--dport', String(port), '-j', C.redirect);

  addOutboundInclude(include.v4, cfg.rerouteVirtualInterfaces,
    (...p) => rs.appendV4('nat', C.output, ...p), (...p) => rs.insertV4('nat', 'PREROUTING', 1, ...p));
  addOutboundInclude(include.v6, cfg.rerouteVirtualInterfaces,
    (...p) => rs.appendV6('nat', C.output, ...p), (...p) => rs.insertV6('nat', 'PREROUTING', 1, ...p));

  if (tproxy) {
    // Keep the mark original_src put on proxy->app packets for the whole connection.
    rs.append('mangle', 'PREROUTING', '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'CONNMARK', '--save-mark');
    rs.append('mangle', 'OUTPUT', '-p', 'tcp', '-o', 'lo', '-m', 'mark', '--mark', mark, '-j', 'RETURN');
    for (const [owner, ids] of [['--uid-owner', uids], ['--gid-owner', gids]] as const) {
      for (const id of ids) {
        rs.appendVersioned('mangle', 'OUTPUT', loopV4, LOOPBACK_V6, (lo) =>
          ['!', '-d', lo, '-p', 'tcp', '-o', 'lo', '-m', 'owner', owner, id, '-j', 'MARK', '--set-mark', OUTBOUND_MARK]);
      }
    }
    // Replies from the app must follow the policy route back to the proxy.
    rs.append('mangle', 'OUTPUT', '-p', 'tcp', '-m', 'connmark', '--mark', mark, '-j', 'CONNMARK', '--restore-mark');
    rs.insert('mangle', C.inbound, 1, '-p', 'tcp', '-m', 'mark', '--mark', mark, '-j', 'RETURN');
    rs.insertV4('mangle', C.inbound, 2, '-p', 'tcp', '-s', PASSTHROUGH_SRC.v4, '-i', 'lo', '-j', 'RETURN');
    rs.insertV6('mangle', C.inbound, 2, '-p', 'tcp', '-s', PASSTHROUGH_SRC.v6, '-i', 'lo', '-j', 'RETURN');
    rs.insert('mangle', C.inbound, 3, '-p', 'tcp', '-i', 'lo', '-m', 'mark', '!', '--mark', OUTBOUND_MARK, '-j', 'RETURN');
  }
  return { v4: rs.v4, v6: rs.v6 };
}

function addInbound(rs: RuleSet, cfg: CaptureConfig): void {
  if (cfg.inboundPorts !== '*' && cfg.inboundPorts.length === 0) return;
  const tproxy = cfg.interceptionMode === 'TPROXY';
  const table = tproxy ? 'mangle' : 'nat';
  if (tproxy) {
    // Marked packets are policy-routed to lo, where the TPROXY listener picks them up.
    rs.append('mangle', C.divert, '-j', 'MARK', '--set-mark', String(cfg.tproxyMark));
    rs.append('mangle', C.divert, '-j', 'ACCEPT');
    rs.appendVersioned('mangle', C.tproxy, cfg.hostIPv4LoopbackCidr, LOOPBACK_V6, (lo) =>
      ['!', '-d', lo, '-p', 'tcp', '-j', 'TPROXY', '--tproxy-mark', `${cfg.tproxyMark}/0xffffffff`, '--on-port', String(cfg.inboundCapturePort)]);
  }
  rs.append(table, 'PREROUTING', '-p', 'tcp', '-j', C.inbound);

  const capture = (port: string[]) => {
    if (tproxy) {
      // Established connections are diverted to the existing socket; new ones go to TPROXY.
      rs.append('mangle', C.inbound, '-p', 'tcp', ...port, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', C.divert);
      rs.append('mangle', C.inbound, '-p', 'tcp', ...port, '-j', C.tproxy);
    } else {
      rs.append('nat', C.inbound, '-p', 'tcp', ...port, '-j', C.inRedirect);
    }
  };
  if (cfg.inboundPorts === '*') {
    for (const port of cfg.inboundPortsExclude) rs.append(table, C.inbound, '-p', 'tcp', '--dport', String(port), '-j', 'RETURN');
    capture([]);
  } else {
    for (const port of cfg.inboundPorts) capture(['--dport', String(port)]);
  }
}

function addOutboundInclude(
  range: NetworkRange,
  virtualNics: string[],
  append: (...p: string[]) => void,
  insertPrerouting: (...p: string[]) => void,
): void {
  if (range.wildcard) {
    append('-j', C.redirect);
    for (const nic of virtualNics) insertPrerouting('-i', nic, '-j', C.redirect);
    return;
  }
  for (const cidr of range.cidrs) {
    for (const nic of virtualNics) insertPrerouting('-i', nic, '-d', cidr, '-j', C.redirect);
    append('-d', cidr, '-j', C.redirect);
  }
}

function addDns(rs: RuleSet, cfg: CaptureConfig, uids: string[], gids: string[]): void {
  const all = cfg.captureAllDns;
  const port = String(DNS_CAPTURE_PORT);
  const v4 = cfg.dnsServersV4;
  const v6 = cfg.dnsServersV6;
  rs.append('raw', 'OUTPUT', '-j', C.outputDns);
  // Jump only for families that have something to capture.
  if (all || v4.length > 0) rs.appendV4('nat', C.output, '-j', C.outputDns);
  if (all || v6.length > 0) rs.appendV6('nat', C.output, '-j', C.outputDns);

  // Only the resolv.conf servers by default, so local resolvers (dnsmasq) cannot loop through the agent.
  // Istio spells the UDP target "--to-port"; iptables accepts both, and the goldens keep it.
  for (const [proto, toPorts] of [['tcp', '--to-ports'], ['udp', '--to-port']] as const) {
    if (all) {
      rs.append('nat', C.outputDns, '-p', proto, '--dport', '53', '-j', 'REDIRECT', toPorts, port);
    } else {
      for (const s of v4) rs.appendV4('nat', C.outputDns, '-p', proto, '--dport', '53', '-d', `${s}/32`, '-j', 'REDIRECT', toPorts, port);
      for (const s of v6) rs.appendV6('nat', C.outputDns, '-p', proto, '--dport', '53', '-d', `${s}/128`, '-j', 'REDIRECT', toPorts, port);
    }
  }

  // Separate conntrack zones for agent<->upstream (1) and app<->agent (2) UDP flows;
  // otherwise the two halves of a proxied query can collide in conntrack.
  for (const [owner, ids] of [['--uid-owner', uids], ['--gid-owner', gids]] as const) {
    for (const id of ids) {
      rs.append('raw', C.outputDns, '-p', 'udp', '--dport', '53', '-m', 'owner', owner, id, '-j', 'CT', '--zone', '1');
      rs.append('raw', C.outputDns, '-p', 'udp', '--sport', port, '-m', 'owner', owner, id, '-j', 'CT', '--zone', '2');
    }
  }
  if (all) {
    rs.append('raw', 'PREROUTING', '-j', C.inbound);
    rs.append('raw', C.outputDns, '-p', 'udp', '--dport', '53', '-j', 'CT', '--zone', '2');
    rs.append('raw', C.inbound, '-p', 'udp', '--sport', '53', '-j', 'CT', '--zone', '1');
    return;
  }
  if (v4.length > 0) rs.appendV4('raw', 'PREROUTING', '-j', C.inbound);
  for (const s of v4) {
    rs.appendV4('raw', C.outputDns, '-p', 'udp', '--dport', '53', '-d', `${s}/32`, '-j', 'CT', '--zone', '2');
    rs.appendV4('raw', C.inbound, '-p', 'udp', '--sport', '53', '-s', `${s}/32`, '-j', 'CT', '--zone', '1');
  }
  if (v6.length > 0) rs.appendV6('raw', 'PREROUTING', '-j', C.inbound);
  for (const s of v6) {
    rs.appendV6('raw', C.outputDns, '-p', 'udp', '--dport', '53', '-d', `${s}/128`, '-j', 'CT', '--zone', '2');
    rs.appendV6('raw', C.inbound, '-p', 'udp', '--sport', '53', '-s', `${s}/128`, '-j', 'CT', '--zone', '1');
  }
}

/** Renders rules as iptables-restore input: tables sorted by name, chains declared first. */
export function renderRestore(rules: Rule[]): string {
  const tables = new Map<string, string[]>();
  const declared = new Set<string>();
  const lines = (table: string) => {
    let l = tables.get(table);
    if (!l) tables.set(table, (l = []));
    return l;
  };
  const declare = (table: string, chain: string) => {
    const key = `${table}:${chain}`;
    if (declared.has(key)) return;
    declared.add(key);
    if (!BUILTIN_CHAINS.has(chain)) lines(table).push(`-N ${chain}`);
  };
  for (const r of rules) declare(r.table, r.chain);
  // Jump targets need to exist even when nothing is appended to them.
  for (const r of rules) {
    if (r.params.length >= 2 && r.params[r.params.length - 2] === '-j') declare(r.table, r.params[r.params.length - 1]);
  }
  for (const r of rules) lines(r.table).push(r.params.join(' '));

  let out = '';
  for (const table of [...tables.keys()].sort()) {
    out += `* ${table}\n${tables.get(table)!.join('\n')}\nCOMMIT\n`;
  }
  return out;
}

/** The `ip` commands TPROXY relies on, in the order istio issues them. */
export function buildIpRoutes(cfg: CaptureConfig): string[][] {
  const cmds: string[][] = [];
  // Linux only allows binding ::1 on lo by default; the passthrough source ::6 must be added.
  if (cfg.enableIPv6) cmds.push(['ip', '-6', 'addr', 'add', PASSTHROUGH_SRC.v6, 'dev', 'lo']);
  const capturesInbound = cfg.inboundPorts === '*' || cfg.inboundPorts.length > 0;
  if (cfg.interceptionMode !== 'TPROXY' || !capturesInbound) return cmds;
  const families = cfg.enableIPv6 ? ['inet', 'inet6'] : ['inet'];
  const table = String(cfg.tproxyRouteTable);
  for (const f of families) cmds.push(['ip', '-f', f, 'rule', 'add', 'fwmark', String(cfg.tproxyMark), 'lookup', table]);
  for (const f of families) cmds.push(['ip', '-f', f, 'route', 'add', 'local', 'default', 'dev', 'lo', 'table', table]);
  return cmds;
}

export function buildRules(cfg: CaptureConfig): CapturePlan {
  const { v4, v6 } = buildRuleSet(cfg);
  const plan: CapturePlan = { iptables: renderRestore(v4), ipRoutes: buildIpRoutes(cfg) };
  if (cfg.enableIPv6) plan.ip6tables = renderRestore(v6);
  return plan;
}
