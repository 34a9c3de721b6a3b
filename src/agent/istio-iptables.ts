/**
 * `istio-iptables …` as the injection template's init container runs it: the capture flags go to
 * `xsidecar iptables`; the agent's logging flags and the CNI/nftables switches we do not act on are
 * dropped with a warning instead of failing the pod's init.
 */
import { iptablesCommand } from '../capture/command.js';

/** Flags with a value that only pilot-agent's logger reads. */
const LOG_VALUE_FLAGS = ['--log_output_level', '--log_stacktrace_level', '--log_target', '--log_rotate', '--log_rotate_max_age', '--log_rotate_max_backups', '--log_rotate_max_size'];
/** Boolean flags we ignore (logging, and istio-iptables switches with no xsidecar equivalent). */
const IGNORED_BOOL_FLAGS = ['--log_as_json', '--log_caller', '--force-apply', '--native-nftables', '--run-validation'];

export interface Stripped {
  readonly args: string[];
  readonly ignored: string[];
  /** --skip-rule-apply (Istio CNI's validation container): apply nothing. */
  readonly skipApply: boolean;
}

export function stripAgentFlags(argv: readonly string[], valueFlags = LOG_VALUE_FLAGS, boolFlags = IGNORED_BOOL_FLAGS): Stripped {
  const args: string[] = [];
  const ignored: string[] = [];
  let skipApply = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.split('=')[0]!;
    if (valueFlags.includes(name)) {
      ignored.push(a.includes('=') ? a : `${a} ${argv[i + 1] ?? ''}`.trim());
      if (!a.includes('=')) i++;
    } else if (boolFlags.includes(name)) ignored.push(a);
    else if (name === '--skip-rule-apply') {
      skipApply = true;
      ignored.push(a);
    } else args.push(a);
  }
  return { args, ignored, skipApply };
}

export async function istioIptablesCommand(argv: string[]): Promise<number> {
  const { args, ignored, skipApply } = stripAgentFlags(argv);
  if (ignored.length > 0) process.stderr.write(`istio-iptables: warning: ignoring ${ignored.join(' ')} (not used by xsidecar)\n`);
  if (skipApply) {
    process.stderr.write('istio-iptables: --skip-rule-apply: the CNI plugin owns the rules; nothing to do\n');
    return 0;
  }
  return iptablesCommand(args);
}
