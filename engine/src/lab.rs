//! What `st lab` measures and how a run is judged: each fetcher's timeline built from its
//! progress events, the completion statistics, and the lower bound on the time to get a file
//! to N hosts. Sans-IO: the lab driver in `cli/` times the events and hands them over.

use std::collections::BTreeMap;

/// The lower bound, in seconds, on the time to get `size` bytes cut into `fragments` pieces
/// from one seed to `hosts` fetchers when every host uploads at most `rate_bps` bits per
/// second: (1 + ⌊log2 N⌋ / M) · F / u. F / u is the time the seed needs to send one copy;
/// the ⌊log2 N⌋ / M term is the pipeline's fill, during which the last piece doubles its
/// holders at best once per piece time. `None` for no host, no fragment or no rate.
pub fn bound_secs(hosts: u32, size: u64, fragments: u32, rate_bps: u64) -> Option<f64> {
    if hosts == 0 || fragments == 0 || rate_bps == 0 {
        return None;
    }
    let log2n = f64::from(hosts.ilog2());
    let copy = size as f64 * 8.0 / rate_bps as f64;
    Some((1.0 + log2n / f64::from(fragments)) * copy)
}

/// The value at quantile `q` (0 ..= 1) of `sorted` (ascending), by the nearest-rank method:
/// the smallest value with at least `q` of the values at or below it. `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90 and max of a set of completion times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// The last.
    pub max: f64,
}

impl Spread {
    /// The spread of `times` (any order); `None` when empty.
    pub fn of(times: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = times.iter().copied().filter(|t| t.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            p50: quantile(&v, 0.5)?,
            p90: quantile(&v, 0.9)?,
            max: *v.last()?,
        })
    }
}

/// One fetcher's run, built from what it reported, each report timed in seconds since the
/// fetchers were started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// When the fetcher was started.
    pub start_s: f64,
    /// When it first reported verified bytes.
    pub first_byte_s: Option<f64>,
    /// When it reported completion.
    pub complete_s: Option<f64>,
    /// (time, verified bytes held), one sample per progress report, in time order.
    pub samples: Vec<(f64, u64)>,
    /// Bytes it received from each peer (address → bytes), from its summary.
    pub bytes_from: BTreeMap<String, u64>,
    /// Total bytes of the swarm, once known.
    pub total: Option<u64>,
}

impl Timeline {
    /// A fetcher started at `start_s`.
    pub fn new(start_s: f64) -> Timeline {
        Timeline {
            start_s,
            ..Timeline::default()
        }
    }

    /// A progress report at `t`: `have` of `total` bytes verified. Reports that go back in
    /// time are taken at the time of the last one (the driver's clock is monotonic, but the
    /// samples must stay ordered for the plots).
    pub fn progress(&mut self, t: f64, have: u64, total: u64) {
        let t = self.samples.last().map_or(t, |&(last, _)| t.max(last));
        self.total = Some(total);
        if have > 0 && self.first_byte_s.is_none() {
            self.first_byte_s = Some(t);
        }
        self.samples.push((t, have));
    }

    /// The completion report at `t` (every fragment verified and in place).
    pub fn complete(&mut self, t: f64, total: u64) {
        if self.complete_s.is_none() {
            self.progress(t, total, total);
            self.complete_s = self.samples.last().map(|s| s.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_one_copy_plus_the_pipeline_fill() {
        // 64 MiB at 100 Mbit/s is 5.368 s for one copy; 8 hosts, 256 fragments: + 3/256.
        let b = bound_secs(8, 64 << 20, 256, 100_000_000).unwrap();
        let copy = (64u64 << 20) as f64 * 8.0 / 1e8;
        assert!((b - copy * (1.0 + 3.0 / 256.0)).abs() < 1e-9, "{b}");
        // ⌊log2 N⌋: 9 hosts fill like 8, 16 like one more doubling.
        assert_eq!(bound_secs(9, 1000, 10, 8000), bound_secs(8, 1000, 10, 8000));
        assert!(bound_secs(16, 1000, 10, 8000) > bound_secs(15, 1000, 10, 8000));
        assert_eq!(bound_secs(1, 1000, 1, 8000), Some(1.0));
        assert_eq!(bound_secs(0, 1000, 1, 8000), None);
        assert_eq!(bound_secs(4, 1000, 1, 0), None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&v, 1.0), Some(10.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.p50, s.p90, s.max), (2.0, 3.0, 3.0));
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn a_timeline_keeps_first_byte_completion_and_ordered_samples() {
        let mut t = Timeline::new(0.5);
        t.progress(0.6, 0, 100);
        t.progress(0.9, 10, 100);
        t.progress(0.8, 40, 100);
        t.complete(1.4, 100);
        t.complete(1.9, 100);
        assert_eq!(t.first_byte_s, Some(0.9));
        assert_eq!(t.complete_s, Some(1.4));
        assert_eq!(t.total, Some(100));
        let times: Vec<f64> = t.samples.iter().map(|s| s.0).collect();
        assert_eq!(times, vec![0.6, 0.9, 0.9, 1.4], "never back in time");
        assert_eq!(t.samples.last(), Some(&(1.4, 100)));
    }
}
