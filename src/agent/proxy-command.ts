/**
 * `proxy sidecar …`: the istio-proxy container's command line as Istio's injection template writes it.
 * Reads the pod's environment (PROXY_CONFIG, POD_*, INSTANCE_IP, ISTIO_META_*…), builds Istio's bootstrap
 * from it unless XSIDECAR_BOOTSTRAP names a file, runs the sidecar with Istio's ports (15000 admin on
 * 127.0.0.1, 15021 readiness, 15090 metrics) and adds the agent's status port (15020).
 */
import type { Server } from 'node:http';
import { decodeBootstrap, loadBootstrapFile } from '../config/bootstrap.js';
import { ConfigError, newContext } from '../config/reader.js';
import { dnsFlagsFrom } from '../dns/flags.js';
import { log } from '../observe/log.js';
import { Sidecar } from '../server/sidecar.js';
import { parseAppProbers } from './app-probe.js';
import { istioBootstrap } from './istio-bootstrap.js';
import { type Env, parseProxyConfig, withProxyMetadata } from './proxy-config.js';
import { startStatusServer } from './status-server.js';

/** pilot-agent's flags that only its logger, Envoy or features we do not have read. */
const IGNORED_FLAGS = new Set([
  'proxyComponentLogLevel', 'log_output_level', 'log_as_json', 'log_caller', 'log_stacktrace_level', 'log_target', 'log_rotate',
  'log_rotate_max_age', 'log_rotate_max_backups', 'log_rotate_max_size', 'stsPort', 'outlierLogPath', 'concurrency', 'templateFile',
  'serviceCluster', 'tokenManagerPlugin', 'meshConfig', 'vklog', 'proxyType',
]);
const BOOL_FLAGS = new Set(['log_as_json', 'log_caller']);

/** Envoy's log levels, as pino names them. */
const LEVELS: Record<string, string> = { trace: 'trace', debug: 'debug', info: 'info', warning: 'warn', warn: 'warn', error: 'error', critical: 'fatal', off: 'silent' };

export interface ProxyArgs {
  readonly domain?: string;
  readonly logLevel?: string;
  readonly ignored: string[];
}

export function parseProxyArgs(argv: readonly string[]): ProxyArgs {
  const [mode, ...rest] = argv;
  if (mode !== 'sidecar') throw new ConfigError('proxy', `only "proxy sidecar" is supported, got "${mode ?? ''}"`);
  let domain: string | undefined;
  let logLevel: string | undefined;
  const ignored: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    const m = /^--?([A-Za-z_][\w-]*)(?:=(.*))?$/s.exec(a);
    if (!m) throw new ConfigError('proxy sidecar', `unexpected argument "${a}"`);
    const name = m[1]!;
    const value = m[2] ?? (BOOL_FLAGS.has(name) ? 'true' : rest[++i]);
    if (value === undefined) throw new ConfigError(`--${name}`, 'expects a value');
    if (name === 'domain') domain = value;
    else if (name === 'proxyLogLevel') {
      // "debug" or "misc:error,upstream:debug,…": the level without a component is the one we use.
      const level = value.split(',').find((p) => !p.includes(':')) ?? 'info';
      logLevel = LEVELS[level];
      if (!logLevel) throw new ConfigError('--proxyLogLevel', `expected one of ${Object.keys(LEVELS).join(', ')}, got "${level}"`);
    } else if (IGNORED_FLAGS.has(name)) ignored.push(`--${name}${BOOL_FLAGS.has(name) ? '' : `=${value}`}`);
    else throw new ConfigError(`--${name}`, 'unknown flag for "proxy sidecar"');
  }
  return { domain, logLevel, ignored };
}

export async function proxyCommand(argv: string[], version: string, processEnv: Env = process.env): Promise<number> {
  const args = parseProxyArgs(argv);
  if (args.logLevel) log.level = args.logLevel;
  if (args.ignored.length > 0) log.warn({ flags: args.ignored }, 'proxy sidecar: ignoring flags xsidecar does not use');
  const proxyConfig = parseProxyConfig(processEnv.PROXY_CONFIG);
  if (proxyConfig.ignored.length > 0) log.info({ fields: proxyConfig.ignored }, 'PROXY_CONFIG: fields only Envoy or pilot-agent act on, ignored');
  if (proxyConfig.unknown.length > 0) log.warn({ fields: proxyConfig.unknown }, 'PROXY_CONFIG: unknown fields, ignored');
  const env = withProxyMetadata(processEnv, proxyConfig);

  const ctx = newContext();
  const file = env.XSIDECAR_BOOTSTRAP;
  const bootstrap = file ? loadBootstrapFile(file, ctx) : decodeBootstrap(istioBootstrap({ env, proxyConfig, domain: args.domain }), ctx);
  for (const w of ctx.warnings) log.warn({ config: file ?? '(built from the environment)' }, w);
  const probers = parseAppProbers(env.ISTIO_KUBE_APP_PROBERS);

  const sidecar = new Sidecar(bootstrap, {
    drainTimeoutMs: proxyConfig.terminationDrainMs,
    admin: { address: '127.0.0.1', port: proxyConfig.adminPort },
    health: { address: '0.0.0.0', port: 15021 },
    prometheus: { address: '0.0.0.0', port: 15090 },
    version,
    env,
    // pilot-agent runs its DNS proxy only when the mesh asks for DNS capture.
    dns: dnsFlagsFrom(env.ISTIO_META_DNS_CAPTURE === 'true' ? {} : { 'dns-port': '0' }, env),
  });
  await sidecar.start();
  let status: Server | undefined;
  const exit = () =>
    void sidecar.drain().then(() => {
      status?.closeAllConnections();
      status?.close();
      process.exit(0);
    });
  status = await startStatusServer(
    {
      state: () => sidecar.state(),
      get healthFailed() {
        return sidecar.healthFailed;
      },
      // Graceful: readiness turns 503 and listeners drain; the process waits for SIGTERM (or quitquitquit).
      drain: () => void sidecar.drain(),
      quit: exit,
    },
    { address: '0.0.0.0', port: proxyConfig.statusPort, probers, podIp: env.INSTANCE_IP || '127.0.0.1' },
  );
  log.info({ statusPort: proxyConfig.statusPort, discoveryAddress: file ? undefined : proxyConfig.discoveryAddress, appProbers: [...probers.keys()] }, 'istio agent paths ready');
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, exit);
  return -1; // keep running
}
