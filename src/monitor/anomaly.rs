//! Anomaly detection: each key series against its own recent behaviour.
//!
//! An exponentially weighted mean and deviation follow the series; a new value is
//! anomalous when it lies `anomaly_z` deviations *above* the mean (higher is worse
//! for every key series: latency, failure rate, memory). Invariants: no verdict
//! before `anomaly_warmup_samples` values; the deviation used is never below a
//! floor (an absolute one per series and 5% of the mean), so a nearly constant
//! series does not alarm on a tiny wobble; while a value is anomalous the baseline
//! adapts ten times slower, so a spike does not immediately become normal.

use std::collections::BTreeMap;

use serde::Serialize;

/// The EWMA state of one series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ewma {
    /// Weighted mean.
    pub mean: f64,
    /// Weighted variance.
    pub variance: f64,
    /// Values seen.
    pub seen: u64,
}

/// The parameters of the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyParams {
    /// Weight of a new value, 0..1.
    pub alpha: f64,
    /// z from which a value is anomalous.
    pub z: f64,
    /// Values needed before judging.
    pub warmup: u64,
}

/// The verdict on one value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyVerdict {
    /// The value.
    pub value: f64,
    /// The baseline mean before it.
    pub mean: f64,
    /// Deviations above the mean (0 while warming up).
    pub z: f64,
    /// Whether it is anomalous.
    pub anomalous: bool,
}

impl Ewma {
    /// Judges `value` against the state, then learns from it. `floor` is the
    /// smallest deviation the series is credited with, in its own unit.
    pub fn observe(&mut self, value: f64, floor: f64, params: &AnomalyParams) -> AnomalyVerdict {
        if self.seen == 0 {
            self.mean = value;
            self.variance = 0.0;
            self.seen = 1;
            return AnomalyVerdict {
                value,
                mean: value,
                z: 0.0,
                anomalous: false,
            };
        }
        let deviation = self.variance.sqrt().max(floor).max(0.05 * self.mean.abs());
        let z = if deviation > 0.0 {
            (value - self.mean) / deviation
        } else {
            0.0
        };
        let judged = self.seen >= params.warmup;
        let anomalous = judged && z >= params.z;
        let verdict = AnomalyVerdict {
            value,
            mean: self.mean,
            z: if judged { z } else { 0.0 },
            anomalous,
        };
        let alpha = if anomalous {
            params.alpha / 10.0
        } else {
            params.alpha
        };
        let diff = value - self.mean;
        self.mean += alpha * diff;
        self.variance = (1.0 - alpha) * (self.variance + alpha * diff * diff);
        self.seen += 1;
        verdict
    }
}

/// The detectors of every key series, by series name.
#[derive(Debug, Default)]
pub struct AnomalyDetector {
    series: BTreeMap<String, Ewma>,
    latest: BTreeMap<String, AnomalyVerdict>,
}

impl AnomalyDetector {
    /// Judges one value of a series and remembers the verdict.
    pub fn observe(
        &mut self,
        series: &str,
        value: f64,
        floor: f64,
        params: &AnomalyParams,
    ) -> AnomalyVerdict {
        let verdict = self
            .series
            .entry(series.to_string())
            .or_default()
            .observe(value, floor, params);
        self.latest.insert(series.to_string(), verdict.clone());
        verdict
    }

    /// The latest verdict of each series.
    pub fn latest(&self) -> &BTreeMap<String, AnomalyVerdict> {
        &self.latest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: AnomalyParams = AnomalyParams {
        alpha: 0.05,
        z: 4.0,
        warmup: 30,
    };

    fn jitter(i: u64) -> f64 {
        let x = i.wrapping_mul(2862933555777941757).wrapping_add(3037000493);
        ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    #[test]
    fn normal_jitter_is_not_an_anomaly() {
        let mut d = AnomalyDetector::default();
        for i in 0..2000 {
            let v = d.observe("latency", 100.0 + 15.0 * jitter(i), 5.0, &PARAMS);
            assert!(!v.anomalous, "sample {i}: {v:?}");
        }
    }

    #[test]
    fn an_injected_latency_spike_is_an_anomaly() {
        let mut d = AnomalyDetector::default();
        for i in 0..200 {
            d.observe("latency", 100.0 + 15.0 * jitter(i), 5.0, &PARAMS);
        }
        let v = d.observe("latency", 400.0, 5.0, &PARAMS);
        assert!(v.anomalous, "{v:?}");
        assert!(v.z > 4.0);
        // Lower than usual is never an anomaly.
        let v = d.observe("latency", 1.0, 5.0, &PARAMS);
        assert!(!v.anomalous, "{v:?}");
    }

    #[test]
    fn the_floor_keeps_a_constant_series_calm() {
        let mut d = AnomalyDetector::default();
        for _ in 0..100 {
            d.observe("fail_rate", 0.0, 1.0, &PARAMS);
        }
        assert!(!d.observe("fail_rate", 2.0, 1.0, &PARAMS).anomalous);
        assert!(d.observe("fail_rate", 6.0, 1.0, &PARAMS).anomalous);
    }

    #[test]
    fn nothing_is_judged_during_warm_up() {
        let mut d = AnomalyDetector::default();
        for _ in 0..10 {
            d.observe("x", 1.0, 0.1, &PARAMS);
        }
        assert!(!d.observe("x", 1000.0, 0.1, &PARAMS).anomalous);
    }
}
