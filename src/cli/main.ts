#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { iptablesCommand } from '../capture/command.js';
import { decodeBootstrap, loadBootstrapFile } from '../config/bootstrap.js';
import { defaultBootstrap } from '../config/default-bootstrap.js';
import type { Bootstrap } from '../config/model.js';
import { ConfigError, newContext, parseDurationMs } from '../config/reader.js';
import { log } from '../observe/log.js';
import { Sidecar } from '../server/sidecar.js';
import { adsBootstrap } from '../xds/bootstrap.js';

const USAGE = `usage:
  xsidecar run [-c FILE] [--xds-address HOST:PORT] [--drain-timeout 5s] [--health-port 15021] [--prometheus-port 15090] [--log-level info]
  xsidecar check -c FILE
  xsidecar iptables [istio-iptables flags] [--dry-run | --clean]
`;

const version = (): string => {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
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
  console.log(`ok: ${values.config}: ${b.listeners.length} listener(s) [${b.listeners.map((l) => `${l.name}@${l.address.address}:${l.address.port}`).join(', ')}], ${b.clusters.length} cluster(s) [${b.clusters.map((c) => c.name).join(', ')}]${b.dynamicResources?.adsConfig ? ', ADS configured' : ''}, ${ctx.warnings.length} warning(s)`);
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
      return iptablesCommand(rest);
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      process.stderr.write(`unknown command "${cmd}"\n${USAGE}`);
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
