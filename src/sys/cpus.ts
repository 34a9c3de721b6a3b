/**
 * How many CPUs the sidecar may use: the CPUs it may run on, capped by the container's CPU limit (a
 * cgroup quota, which Kubernetes sets from `resources.limits.cpu`). Node and V8 size themselves by the
 * first alone, and a pod's limit is usually far below the node's core count.
 */
import { availableParallelism } from 'node:os';
import { readTextFile } from './proc.js';

/**
 * The quota in CPUs (rounded up), or undefined when there is none: cgroup v2's `cpu.max` ("max 100000"
 * or "<quota> <period>"), else cgroup v1's `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`.
 */
export function cgroupCpuQuota(readFile: (file: string) => string | undefined = readTextFile): number | undefined {
  const v2 = readFile('/sys/fs/cgroup/cpu.max')?.trim().split(/\s+/);
  let quota: number, period: number;
  if (v2) [quota, period] = [v2[0] === 'max' ? NaN : Number(v2[0]), Number(v2[1])];
  else [quota, period] = [Number(readFile('/sys/fs/cgroup/cpu/cpu.cfs_quota_us')), Number(readFile('/sys/fs/cgroup/cpu/cpu.cfs_period_us'))];
  if (!(quota > 0) || !(period > 0)) return undefined;
  return Math.max(1, Math.ceil(quota / period));
}

/** The CPUs this process may use: those it may run on, capped by the cgroup quota. */
export function cpuBudget(cpus = availableParallelism(), quota = cgroupCpuQuota()): number {
  return Math.max(1, Math.min(cpus, quota ?? cpus));
}
