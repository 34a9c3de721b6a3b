import { Counter, Gauge } from '../observe/prom.js';
import { registry } from '../observe/metrics.js';

/** Workload certificate metrics, on the process registry (/stats/prometheus). */
export const identityMetrics = {
  expiry: new Gauge({ name: 'xsidecar_identity_cert_expiry_timestamp_seconds', help: 'NotAfter of the workload certificate in use (Unix seconds)', registers: [registry] }),
  rotateAt: new Gauge({ name: 'xsidecar_identity_cert_rotation_timestamp_seconds', help: 'When the workload certificate is due to be renewed (Unix seconds)', registers: [registry] }),
  issued: new Counter({ name: 'xsidecar_identity_cert_issued_total', help: 'Workload certificates received from the CA', registers: [registry] }),
  failures: new Counter({ name: 'xsidecar_identity_csr_failures_total', help: 'CreateCertificate calls that failed, by reason (a gRPC status name, or local)', labelNames: ['reason'], registers: [registry] }),
};
