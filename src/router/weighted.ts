import type { WeightedCluster } from '../config/model.js';

/** A cluster drawn in proportion to the weights (Envoy's weighted_clusters). */
export function pickWeighted(clusters: readonly WeightedCluster[]): string {
  let total = 0;
  for (const c of clusters) total += c.weight;
  let r = Math.random() * total;
  for (const c of clusters) {
    r -= c.weight;
    if (r < 0) return c.name;
  }
  return clusters[clusters.length - 1]!.name;
}
