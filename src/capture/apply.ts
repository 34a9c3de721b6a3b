// Applies and removes capture rules with the system's iptables tools. Commands are run
// without a shell, and the runner is injectable so tests can target a network namespace.
import { spawnSync } from 'node:child_process';
import type { CaptureConfig } from './config.js';
import { BUILTIN_CHAINS, buildRuleSet, buildRules, type Rule } from './rules.js';

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Set when the command could not be started (e.g. ENOENT). */
  error?: NodeJS.ErrnoException;
}
export type Runner = (cmd: string, args: string[], input?: string) => CommandResult;

export const spawnRunner: Runner = (cmd, args, input) => {
  // On a Kubernetes node iptables-save (kube-proxy rules) can exceed Node's 1 MiB default.
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error as NodeJS.ErrnoException | undefined };
};

export interface CaptureOptions {
  run?: Runner;
}

export interface ApplyResult {
  tables: string[];
  rules: number;
  ip6tables: boolean;
  ipCommands: number;
}

export interface CleanResult {
  /** "table/CHAIN" (prefixed "ip6:" for IPv6) of every chain that was removed. */
  removedChains: string[];
  removedRules: number;
}

const CAPTURE_TABLES = ['nat', 'mangle', 'raw'];

interface Family {
  name: 'ipv4' | 'ipv6';
  iptables: string;
  save: string;
  restore: string;
}
const V4: Family = { name: 'ipv4', iptables: 'iptables', save: 'iptables-save', restore: 'iptables-restore' };
const V6: Family = { name: 'ipv6', iptables: 'ip6tables', save: 'ip6tables-save', restore: 'ip6tables-restore' };

function commandLine(cmd: string, args: string[]): string {
  return [cmd, ...args].join(' ');
}

function notFound(cmd: string): Error {
  return new Error(`${cmd} not found in PATH: install iptables/iproute2 or run inside the proxy's init container`);
}

/** Runs a command and throws with its stderr when it cannot start or exits non-zero. */
function mustRun(run: Runner, cmd: string, args: string[], input?: string): CommandResult {
  const r = run(cmd, args, input);
  if (r.error) {
    if (r.error.code === 'ENOENT') throw notFound(cmd);
    throw new Error(`${commandLine(cmd, args)} could not be started: ${r.error.message}`);
  }
  if (r.status !== 0) {
    throw new Error(`${commandLine(cmd, args)} failed (exit ${r.status ?? 'signal'}): ${r.stderr.trim() || '(no stderr)'}`);
  }
  return r;
}

/** Like mustRun but a non-zero exit is an expected outcome (e.g. deleting something absent). */
function tryRun(run: Runner, cmd: string, args: string[], input?: string): CommandResult {
  const r = run(cmd, args, input);
  if (r.error?.code === 'ENOENT') throw notFound(cmd);
  return r;
}

function restore(run: Runner, fam: Family, text: string): void {
  try {
    // --wait: with the legacy backend, another iptables user (kube-proxy, a CNI) may hold the xtables lock.
    mustRun(run, fam.restore, ['--noflush', '--wait'], text);
  } catch (err) {
    const msg = (err as Error).message;
    const hint = /already exists/i.test(msg) ? ' (Istio capture rules are already installed; use --clean first or --reconcile)' : '';
    throw new Error(`${msg}${hint}`);
  }
}

export function dryRun(cfg: CaptureConfig): string {
  const plan = buildRules(cfg);
  let out = plan.iptables;
  if (plan.ip6tables !== undefined) out += `# ip6tables-restore input:\n${plan.ip6tables}`;
  for (const cmd of plan.ipRoutes) out += `# ${cmd.join(' ')}\n`;
  return out;
}

export function applyRules(cfg: CaptureConfig, opts: CaptureOptions = {}): ApplyResult {
  const run = opts.run ?? spawnRunner;
  const plan = buildRules(cfg);
  if (cfg.reconcile) cleanRules(cfg, opts);

  restore(run, V4, plan.iptables);
  if (plan.ip6tables !== undefined) restore(run, V6, plan.ip6tables);

  // Re-running would otherwise stack duplicate policy rules (the kernel allows them).
  if (plan.ipRoutes.some((c) => c.includes('rule'))) removeIpRules(run, cfg);
  for (const [cmd, ...args] of plan.ipRoutes) {
    const r = tryRun(run, cmd, args);
    if (r.status !== 0 && !/File exists|already assigned/i.test(r.stderr)) {
      throw new Error(`${commandLine(cmd, args)} failed (exit ${r.status}): ${r.stderr.trim() || '(no stderr)'}`);
    }
  }

  const { v4, v6 } = buildRuleSet(cfg);
  return {
    tables: [...new Set(v4.map((r) => r.table))].sort(),
    rules: v4.length + v6.length,
    ip6tables: plan.ip6tables !== undefined,
    ipCommands: plan.ipRoutes.length,
  };
}

/**
 * Removes everything an apply may have installed, tolerating parts that are absent. Chains
 * and jumps are discovered from iptables-save so rules from a different config still go;
 * non-jump rules in built-in chains can only be matched against what we would generate,
 * so both interception modes are tried.
 */
export function cleanRules(cfg: CaptureConfig, opts: CaptureOptions = {}): CleanResult {
  const run = opts.run ?? spawnRunner;
  const result: CleanResult = { removedChains: [], removedRules: 0 };
  const otherMode: CaptureConfig = { ...cfg, interceptionMode: cfg.interceptionMode === 'TPROXY' ? 'REDIRECT' : 'TPROXY' };
  const variants = [cfg, otherMode];
  const families: [Family, (c: CaptureConfig) => Rule[]][] = [[V4, (c) => buildRuleSet(c).v4]];
  if (cfg.enableIPv6) families.push([V6, (c) => buildRuleSet(c).v6]);

  for (const [fam, rulesOf] of families) {
    const builtinRules = variants.flatMap(rulesOf).filter((r) => BUILTIN_CHAINS.has(r.chain) && !jumpsToIstio(r.params));
    for (const r of dedupe(builtinRules).reverse()) {
      // -I rules carry a position; deletion matches by spec only.
      const spec = r.params[0] === '-I' ? r.params.slice(3) : r.params.slice(2);
      if (tryRun(run, fam.iptables, ['-w', '-t', r.table, '-D', r.chain, ...spec]).status === 0) result.removedRules++;
    }
    for (const table of CAPTURE_TABLES) {
      const saved = tryRun(run, fam.save, ['-t', table]);
      if (saved.status !== 0) continue; // table not present in this kernel/namespace
      const chains: string[] = [];
      const deletes: string[] = [];
      for (const line of saved.stdout.split('\n')) {
        const chain = /^:(ISTIO_\S+)/.exec(line);
        if (chain) chains.push(chain[1]);
        const rule = /^-A (\S+) (.*)$/.exec(line);
        if (rule && BUILTIN_CHAINS.has(rule[1]) && / -[jg] ISTIO_\S+(\s|$)/.test(` ${rule[2]}`)) deletes.push(`-D ${rule[1]} ${rule[2]}`);
      }
      if (chains.length === 0 && deletes.length === 0) continue;
      // Flush all before deleting any, since Istio chains jump to each other.
      const text = [`*${table}`, ...deletes, ...chains.map((c) => `-F ${c}`), ...chains.map((c) => `-X ${c}`), 'COMMIT', ''].join('\n');
      mustRun(run, fam.restore, ['--noflush', '--wait'], text);
      result.removedRules += deletes.length;
      for (const c of chains) result.removedChains.push(`${fam.name === 'ipv6' ? 'ip6:' : ''}${table}/${c}`);
    }
  }
  removeIpRules(run, cfg);
  return result;
}

function jumpsToIstio(params: string[]): boolean {
  const j = params.indexOf('-j');
  return j >= 0 && params[j + 1]?.startsWith('ISTIO_') === true;
}

function dedupe(rules: Rule[]): Rule[] {
  const seen = new Set<string>();
  return rules.filter((r) => {
    const key = `${r.table} ${r.params.join(' ')}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Deletes the TPROXY policy rule and route for every family, however many copies exist.
 * A missing `ip` binary means nothing could have been installed, so it is not an error.
 */
function removeIpRules(run: Runner, cfg: CaptureConfig): void {
  const table = String(cfg.tproxyRouteTable);
  const families = cfg.enableIPv6 ? ['inet', 'inet6'] : ['inet'];
  for (const f of families) {
    for (let i = 0; i < 32; i++) {
      if (run('ip', ['-f', f, 'rule', 'del', 'fwmark', String(cfg.tproxyMark), 'lookup', table]).status !== 0) break;
    }
    run('ip', ['-f', f, 'route', 'del', 'local', 'default', 'dev', 'lo', 'table', table]);
  }
}
