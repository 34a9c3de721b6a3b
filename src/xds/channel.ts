/**
 * The gRPC channel to istiod. A fresh channel per stream attempt: our own jittered backoff decides when
 * to retry, instead of stacking it on grpc-js's reconnect backoff (which grows to two minutes), and TLS
 * files are re-read each time so rotated certificates are picked up on reconnect.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { XdsTarget } from './target.js';

const read = (file: string | undefined) => {
  if (!file) return null;
  try {
    return readFileSync(file);
  } catch (e) {
    throw new Error(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
};

/** Bytes istiod may send ahead of what we have read: more than a full push of a large mesh. */
const FLOW_CONTROL_WINDOW = 16 * 1024 * 1024;

export function openChannel(target: XdsTarget): grpc.Client {
  const options: grpc.ChannelOptions = {
    // A full push for a big mesh is many megabytes; grpc-js's 4 MiB default would fail the stream.
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
    // HTTP/2 flow control: with the default 64 KiB window, istiod can send no further than that while we
    // decode a response, so the next one (the EDS asked for ahead of the clusters, the rest of a push)
    // crosses only once we are done. Envoy's default window is 256 MiB; a push is held whole anyway.
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
    // Notice a vanished istiod (no RST, e.g. its node died) within ~40 s; istiod permits pings every 15 s.
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.keepalive_permit_without_calls': 1,
  };
  let creds = grpc.credentials.createInsecure();
  if (target.tls?.workloadIdentity) {
    const identity = target.tls.identity;
    if (!identity) throw new Error('the xDS connection needs the workload identity (mTLS to istiod), and there is none');
    const c = identity.credentials();
    const call = grpc.credentials.createFromMetadataGenerator((_params, cb) => {
      try {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(identity.callMetadata())) md.set(k, v);
        cb(null, md);
      } catch (e) {
        cb(e as Error);
      }
    });
    creds = grpc.credentials.combineChannelCredentials(grpc.credentials.createSsl(Buffer.from(c.rootPem), Buffer.from(c.keyPem), Buffer.from(c.chainPem)), call);
    const serverName = target.tls.serverName ?? identity.serverName;
    if (serverName) {
      options['grpc.ssl_target_name_override'] = serverName;
      options['grpc.default_authority'] = serverName;
    }
  } else if (target.tls) {
    const { caFile, certFile, keyFile, serverName } = target.tls;
    creds = grpc.credentials.createSsl(read(caFile), read(keyFile), read(certFile));
    if (serverName) {
      options['grpc.ssl_target_name_override'] = serverName;
      options['grpc.default_authority'] = serverName;
    }
  }
  return new grpc.Client(target.target, creds, options);
}
