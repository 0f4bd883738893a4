//! Prometheus metrics for Vasto's nodes (master, store, gateway).
//!
//! * [`Histogram`]: a latency histogram of fixed buckets ([`LATENCY_BUCKETS`]) kept in relaxed
//!   atomics, recorded from hot paths without locks or allocation. Histograms rather than
//!   summaries so that they aggregate across nodes.
//! * [`Scrape`]: writes gauges, counters and histograms with labels while a scrape runs, so a
//!   node's collector reads its live state (RocksDB properties, lags, disks) only when asked.
//! * [`serve`]: the `/metrics` endpoint over HTTP/1.1 on a thread of its own.
mod histogram;
mod http;
mod scrape;

pub use histogram::{Histogram, HistogramTotals, LATENCY_BUCKETS};
pub use http::{serve, MetricsError, MetricsServer};
pub use scrape::{labels, render, Labels, Scrape, CONTENT_TYPE};
