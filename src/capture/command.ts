// `xsidecar iptables …`: the istio-init equivalent. Returns an exit code instead of
// exiting so the CLI (and tests) decide what happens next.
import { readFileSync } from 'node:fs';
import { applyRules, cleanRules, dryRun, type CaptureOptions } from './apply.js';
import { captureUsage, loadDnsServers, parseCaptureArgs, type CaptureConfig } from './config.js';

export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
  /** Where DNS servers come from when only resolv.conf servers are captured. */
  resolvConfPath?: string;
  run?: CaptureOptions['run'];
}

const defaultIO: CommandIO = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};

export async function iptablesCommand(argv: string[], io: CommandIO = defaultIO): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    io.out(captureUsage());
    return 0;
  }
  let cfg: CaptureConfig;
  try {
    cfg = parseCaptureArgs(argv);
  } catch (err) {
    io.err(`xsidecar iptables: ${(err as Error).message}\n${captureUsage()}`);
    return 2;
  }
  try {
    if (cfg.redirectDns && !cfg.captureAllDns) {
      const path = io.resolvConfPath ?? '/etc/resolv.conf';
      cfg = loadDnsServers(cfg, readFileSync(path, 'utf8'));
      if (cfg.dnsServersV4.length + cfg.dnsServersV6.length === 0) {
        io.err(`xsidecar iptables: warning: --redirect-dns without --capture-all-dns and no nameserver in ${path}; DNS capture disabled\n`);
      }
    }
    if (cfg.dryRun) {
      io.out(dryRun(cfg));
      return 0;
    }
    if (cfg.clean) {
      const res = cleanRules(cfg, { run: io.run });
      io.out(JSON.stringify({ action: 'clean', ...res }) + '\n');
      return 0;
    }
    const res = applyRules(cfg, { run: io.run });
    io.out(JSON.stringify({ action: 'apply', mode: cfg.interceptionMode, ...res }) + '\n');
    return 0;
  } catch (err) {
    io.err(`xsidecar iptables: ${(err as Error).message}\n`);
    return 1;
  }
}
