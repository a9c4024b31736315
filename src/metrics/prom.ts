// prom-client's metric classes, each loaded from its own module. The package's index loads everything it has at
// once: its push-gateway client (http, https), the cluster aggregator, the summary's t-digest, and the default
// metrics, which load @opentelemetry/api for exemplars: 75-105 ms of every daemon start here, against ~20 ms for
// the registry and the three classes the daemon uses. The default metrics come through collectDefaultMetrics below.
/* eslint-disable @typescript-eslint/no-require-imports -- the package's own modules, typed by its index */
import type * as Prom from 'prom-client';

export const Registry = require('prom-client/lib/registry') as typeof Prom.Registry;
export type Registry<T extends Prom.RegistryContentType = Prom.PrometheusContentType> = Prom.Registry<T>;
export const Counter = require('prom-client/lib/counter') as typeof Prom.Counter;
export type Counter<T extends string = string> = Prom.Counter<T>;
export const Gauge = require('prom-client/lib/gauge') as typeof Prom.Gauge;
export type Gauge<T extends string = string> = Prom.Gauge<T>;
export const Histogram = require('prom-client/lib/histogram') as typeof Prom.Histogram;
export type Histogram<T extends string = string> = Prom.Histogram<T>;

/** prom-client's collectDefaultMetrics (process_* and nodejs_*), loaded on the first call. */
export function collectDefaultMetrics<T extends Prom.RegistryContentType>(
  config?: Prom.DefaultMetricsCollectorConfiguration<T>,
): void {
  (require('prom-client/lib/defaultMetrics') as typeof Prom.collectDefaultMetrics)(config);
}
