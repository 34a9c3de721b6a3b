import { isIP } from 'node:net';
import type { CidrRange, SocketAddress } from './model.js';
import { ConfigError, ObjReader } from './reader.js';

/** An envoy.config.core.v3.Address, of which only socket_address is supported. */
export function decodeSocketAddress(addr: ObjReader, opts: { hostnames?: boolean } = {}): SocketAddress {
  const sa = addr.obj('socket_address');
  addr.ignore('pipe', 'envoy_internal_address');
  if (!sa) throw new ConfigError(addr.at('socket_address'), 'is required (pipe and internal addresses are not supported)');
  addr.done();
  return decodeBareSocketAddress(sa, opts);
}

/** An envoy.config.core.v3.SocketAddress. */
export function decodeBareSocketAddress(sa: ObjReader, opts: { hostnames?: boolean } = {}): SocketAddress {
  const address = sa.requiredStr('address');
  if (!opts.hostnames && isIP(address) === 0) throw new ConfigError(sa.at('address'), `expected an IP address, got "${address}"`);
  const port = sa.int('port_value', 0, 65535) ?? 0;
  sa.ignore('protocol', 'ipv4_compat', 'resolver_name', 'named_port');
  sa.done();
  return { address, port };
}

export function decodeCidr(r: ObjReader): CidrRange {
  const address = r.requiredStr('address_prefix');
  const family = isIP(address);
  if (family === 0) throw new ConfigError(r.at('address_prefix'), `expected an IP address, got "${address}"`);
  const max = family === 4 ? 32 : 128;
  const prefixLen = r.int('prefix_len', 0, max) ?? max;
  r.done();
  return { address, prefixLen };
}
