/**
 * The names Istio's injection template calls the proxy image by: `proxy sidecar …` (the istio-proxy
 * container), `istio-iptables …` (the init container), and `pilot-agent <request|wait|proxy|istio-iptables>`
 * (lifecycle hooks exec `pilot-agent`; the image ships that name).
 */
import { istioIptablesCommand } from './istio-iptables.js';
import { requestCommand, waitCommand } from './pilot-agent.js';
import { proxyCommand } from './proxy-command.js';

export const ISTIO_USAGE = `  xsidecar proxy sidecar [--domain NS.svc.cluster.local] [--proxyLogLevel=warning] [pilot-agent's log flags: ignored]
  xsidecar istio-iptables [istio-iptables flags]          (= iptables; log flags ignored)
  xsidecar pilot-agent request [--debug-port=15000] METHOD PATH [BODY] | wait [--url URL] | proxy … | istio-iptables …
`;

export async function istioCommand(cmd: 'proxy' | 'istio-iptables' | 'pilot-agent', argv: string[], version: string): Promise<number> {
  if (cmd === 'proxy') return proxyCommand(argv, version);
  if (cmd === 'istio-iptables') return istioIptablesCommand(argv);
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'request':
      return requestCommand(rest);
    case 'wait':
      return waitCommand(rest);
    case 'proxy':
    case 'istio-iptables':
      return istioCommand(sub, rest, version);
    default:
      process.stderr.write(`pilot-agent: unknown command "${sub ?? ''}"\n${ISTIO_USAGE}`);
      return 1;
  }
}
