//! Writing metric families while a scrape runs, through prometheus-client's OpenMetrics
//! encoder.
use crate::histogram::{HistogramTotals, LATENCY_BUCKETS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;

/// The `Content-Type` of what [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of one sample: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// [`Labels`] from borrowed (name, value) pairs.
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// One scrape in progress: each call writes one metric family with all its samples.
pub struct Scrape<'a> {
    enc: DescriptorEncoder<'a>,
}

impl Scrape<'_> {
    /// A gauge family: a value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, f64)>) -> fmt::Result {
        let mut family = self.enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in samples {
            if labels.is_empty() {
                family.encode_gauge(&value)?;
            } else {
                family.encode_family(&labels)?.encode_gauge(&value)?;
            }
        }
        Ok(())
    }

    /// A gauge without labels.
    pub fn gauge_one(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        self.gauge(name, help, [(Labels::new(), value)])
    }

    /// A counter family; `name` without the `_total` the encoder appends.
    pub fn counter(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) -> fmt::Result {
        let mut family = self.enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in samples {
            if labels.is_empty() {
                family.encode_counter::<Labels, _, u64>(&value, None)?;
            } else {
                family.encode_family(&labels)?.encode_counter::<Labels, _, u64>(&value, None)?;
            }
        }
        Ok(())
    }

    /// A histogram family in seconds over [`LATENCY_BUCKETS`].
    pub fn histogram(&mut self, name: &str, help: &str, samples: impl IntoIterator<Item = (Labels, HistogramTotals)>) -> fmt::Result {
        let mut family = self.enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, totals) in samples {
            let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().copied().zip(totals.buckets).collect();
            // prometheus-client writes the bound f64::MAX as `+Inf`.
            buckets.push((f64::MAX, totals.buckets[LATENCY_BUCKETS.len()]));
            let sum = totals.sum_ns as f64 / 1e9;
            if labels.is_empty() {
                family.encode_histogram::<Labels>(sum, totals.count(), &buckets, None)?;
            } else {
                family.encode_family(&labels)?.encode_histogram::<Labels>(sum, totals.count(), &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// The function that writes a node's metrics at each scrape.
pub type CollectFn = dyn Fn(&mut Scrape<'_>) -> fmt::Result + Send + Sync;

struct FnCollector(Box<CollectFn>);

impl fmt::Debug for FnCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCollector")
    }
}

impl Collector for FnCollector {
    fn encode(&self, enc: DescriptorEncoder<'_>) -> fmt::Result {
        (self.0)(&mut Scrape { enc })
    }
}

/// A registry whose one collector is `collect`.
pub(crate) fn registry(collect: Box<CollectFn>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(FnCollector(collect)));
    registry
}

/// The OpenMetrics text of `registry` now.
pub(crate) fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(16 << 10);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// The text one scrape of `collect` produces (for tests and for tools that print metrics).
pub fn render(collect: impl Fn(&mut Scrape<'_>) -> fmt::Result + Send + Sync + 'static) -> Result<String, fmt::Error> {
    encode(&registry(Box::new(collect)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Histogram;

    #[test]
    fn families_are_written_in_the_openmetrics_text_format() {
        let h = Histogram::default();
        h.observe_ns(30_000, 2);
        h.observe_ns(2_000_000, 1);
        let totals = h.totals();
        let text = render(move |s| {
            s.gauge_one("vasto_test_up", "Whether it is up.", 1.0)?;
            s.counter("vasto_test_requests", "Requests.", [(vec![("op", "get".to_owned()), ("status", "ok".to_owned())], 7)])?;
            s.histogram("vasto_test_seconds", "Latency.", [(vec![("op", "get".to_owned())], totals.clone())])
        })
        .expect("render");
        assert!(text.contains("# TYPE vasto_test_up gauge\nvasto_test_up 1.0\n"), "{text}");
        assert!(text.contains("vasto_test_requests_total{op=\"get\",status=\"ok\"} 7\n"), "{text}");
        // Buckets are cumulative in the exposition.
        for bucket in ["{le=\"0.000025\",op=\"get\"} 0\n", "{le=\"0.00005\",op=\"get\"} 2\n", "{le=\"0.0025\",op=\"get\"} 3\n", "{le=\"+Inf\",op=\"get\"} 3\n"]
        {
            assert!(text.contains(&format!("vasto_test_seconds_bucket{bucket}")), "{bucket} in {text}");
        }
        assert!(text.contains("vasto_test_seconds_count{op=\"get\"} 3\n"), "{text}");
        assert!(text.contains("vasto_test_seconds_sum{op=\"get\"} 0.00206\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
