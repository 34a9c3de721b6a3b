/** The command line, imported by main.ts once the heap defaults are in place. */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { decodeBootstrap, loadBootstrapFile } from '../config/bootstrap.js';
import { defaultBootstrap } from '../config/default-bootstrap.js';
import { DNS_FLAG_OPTIONS, DNS_USAGE, dnsFlagsFrom } from '../dns/flags.js';
import type { Bootstrap } from '../config/model.js';
import { ConfigError, newContext, parseDurationMs } from '../config/reader.js';
import { log } from '../observe/log.js';
import { Sidecar } from '../server/sidecar.js';
import { packagePath } from '../sys/package-root.js';
import { adsBootstrap } from '../xds/bootstrap.js';

// The agent and capture commands load only when asked for: `run` needs neither (idle footprint).
const usage = async () => `usage:
  xsidecar run [-c FILE] [--xds-address HOST:PORT] [--drain-timeout 5s] [--health-port 15021] [--prometheus-port 15090] [--log-level info]
      [--ca-address HOST:PORT] [--ca-root-cert FILE] [--token-file FILE]   (workload identity; env CA_ADDR, ISTIOD_SAN, TRUST_DOMAIN, SECRET_TTL, ECC_SIGNATURE_ALGORITHM…)
      [--access-log PATH|-] [--no-istio-metrics] [--rpc-stats-max-methods 500]
      ${DNS_USAGE}
  xsidecar check -c FILE
  xsidecar iptables [istio-iptables flags] [--dry-run | --clean]
${(await import('../agent/commands.js')).ISTIO_USAGE}`;

const version = (): string => {
  const pkg = JSON.parse(readFileSync(packagePath('package.json'), 'utf8')) as { version: string };
  return pkg.version;
};

function load(file: string | undefined, ctx = newContext()): Bootstrap {
  return file ? loadBootstrapFile(file, ctx) : decodeBootstrap(defaultBootstrap, ctx);
}

function port(value: string | undefined, fallback: number, flag: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(flag, `expected 0..65535, got "${value}"`);
  return n;
}

function maxMethods(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError('--rpc-stats-max-methods', `expected a whole number, got "${value}"`);
  return n;
}

async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      'drain-timeout': { type: 'string', default: '5s' },
      'health-port': { type: 'string' },
      'prometheus-port': { type: 'string' },
      'log-level': { type: 'string' },
      'xds-address': { type: 'string' },
      'ca-address': { type: 'string' },
      'ca-root-cert': { type: 'string' },
      'token-file': { type: 'string' },
      'access-log': { type: 'string' },
      'no-istio-metrics': { type: 'boolean' },
      'rpc-stats-max-methods': { type: 'string' },
      ...DNS_FLAG_OPTIONS,
    },
  });
  if (values['log-level']) log.level = values['log-level'];
  const ctx = newContext();
  const xdsAddress = values['xds-address'];
  // --xds-address alone: istiod supplies everything, as for Envoy under pilot-agent (no static listeners).
  const bootstrap = xdsAddress && !values.config ? decodeBootstrap(adsBootstrap(defaultBootstrap.node, xdsAddress), ctx) : load(values.config, ctx);
  for (const w of ctx.warnings) log.warn({ config: values.config ?? '(embedded default)' }, w);
  const drainTimeoutMs = parseDurationMs(values['drain-timeout']);
  if (drainTimeoutMs === undefined) throw new ConfigError('--drain-timeout', `expected a duration such as "5s", got "${values['drain-timeout']}"`);
  const sidecar = new Sidecar(bootstrap, {
    drainTimeoutMs,
    admin: { address: '127.0.0.1', port: 15000 },
    health: { address: '0.0.0.0', port: port(values['health-port'], 15021, '--health-port') },
    prometheus: { address: '0.0.0.0', port: port(values['prometheus-port'], 15090, '--prometheus-port') },
    version: version(),
    xdsAddress,
    env: process.env,
    dns: dnsFlagsFrom(values, process.env),
    identity: { caAddress: values['ca-address'], rootCertFile: values['ca-root-cert'], tokenFile: values['token-file'] },
    telemetry: { istioMetrics: !values['no-istio-metrics'], accessLog: values['access-log'], maxRpcMethods: maxMethods(values['rpc-stats-max-methods']) },
  });
  await sidecar.start();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => void sidecar.drain().then(() => process.exit(0)));
  }
  return -1; // keep running
}

function check(argv: string[]): number {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } } });
  if (!values.config) throw new ConfigError('-c', 'a config file is required');
  const ctx = newContext();
  const b = load(values.config, ctx);
  for (const w of ctx.warnings) console.log(`warning: ${w}`);
  console.log(`ok: ${values.config}: ${b.listeners.length} listener(s) [${b.listeners.map((l) => `${l.name}@${l.address.address}:${l.address.port}`).join(', ')}], ${b.clusters.length} cluster(s) [${b.clusters.map((c) => c.name).join(', ')}]${b.dynamicResources?.adsConfig ? ', ADS configured' : ''}${b.dns ? `, DNS proxy ${b.dns.address.address}:${b.dns.address.port} (${b.dns.names.length} name(s))` : ''}, ${ctx.warnings.length} warning(s)`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'run':
      return run(rest);
    case 'check':
      return check(rest);
    case 'iptables':
      return (await import('../capture/command.js')).iptablesCommand(rest);
    case 'proxy':
    case 'istio-iptables':
    case 'pilot-agent':
      return (await import('../agent/commands.js')).istioCommand(cmd, rest, version());
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(await usage());
      return cmd === undefined ? 1 : 0;
    default:
      process.stderr.write(`unknown command "${cmd}"\n${await usage()}`);
      return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: Error) => {
    process.stderr.write(`error: ${e.message}\n`);
    process.exit(1);
  },
);
