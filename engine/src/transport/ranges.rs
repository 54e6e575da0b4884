//! Sets of half-open `u64` ranges: received packet numbers, received and acknowledged stream
//! offsets, stream bytes to retransmit.

/// Sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    r: Vec<(u64, u64)>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
    /// True if no value is in the set.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }
    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.r.len()
    }
    /// The ranges, ascending.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.r.iter().copied()
    }
    /// The lowest range.
    pub fn first(&self) -> Option<(u64, u64)> {
        self.r.first().copied()
    }
    /// The highest range.
    pub fn last(&self) -> Option<(u64, u64)> {
        self.r.last().copied()
    }
    /// True if `v` is in the set.
    pub fn contains(&self, v: u64) -> bool {
        let i = self.r.partition_point(|&(_, e)| e <= v);
        self.r.get(i).is_some_and(|&(s, _)| s <= v)
    }
    /// True if all of `[s, e)` is in the set.
    pub fn contains_range(&self, s: u64, e: u64) -> bool {
        if s >= e {
            return true;
        }
        let i = self.r.partition_point(|&(_, end)| end <= s);
        self.r.get(i).is_some_and(|&(a, b)| a <= s && e <= b)
    }
    /// True if adding `[s, e)` would create a new disjoint range (it touches no existing one).
    pub fn would_add_range(&self, s: u64, e: u64) -> bool {
        if s >= e {
            return false;
        }
        let i = self.r.partition_point(|&(_, end)| end < s);
        let j = self.r.partition_point(|&(start, _)| start <= e);
        i == j
    }
    /// Adds `[s, e)`. Returns true if anything was new.
    pub fn insert(&mut self, s: u64, e: u64) -> bool {
        if s >= e {
            return false;
        }
        let i = self.r.partition_point(|&(_, end)| end < s);
        let j = self.r.partition_point(|&(start, _)| start <= e);
        if i == j {
            self.r.insert(i, (s, e));
            return true;
        }
        let ns = s.min(self.r[i].0);
        let ne = e.max(self.r[j - 1].1);
        let new = !(j == i + 1 && self.r[i].0 <= s && e <= self.r[i].1);
        self.r[i] = (ns, ne);
        self.r.drain(i + 1..j);
        new
    }
    /// Removes `[s, e)`.
    pub fn remove(&mut self, s: u64, e: u64) {
        if s >= e {
            return;
        }
        let i = self.r.partition_point(|&(_, end)| end <= s);
        let j = self.r.partition_point(|&(start, _)| start < e);
        if i >= j {
            return;
        }
        let (fs, _) = self.r[i];
        let (_, le) = self.r[j - 1];
        let mut keep = Vec::new();
        if fs < s {
            keep.push((fs, s));
        }
        if e < le {
            keep.push((e, le));
        }
        self.r.splice(i..j, keep);
    }
    /// Removes everything below `v`.
    pub fn remove_below(&mut self, v: u64) {
        let i = self.r.partition_point(|&(_, e)| e <= v);
        self.r.drain(..i);
        if let Some(f) = self.r.first_mut() {
            f.0 = f.0.max(v);
        }
    }
    /// Removes the lowest ranges until at most `n` remain.
    pub fn truncate_low(&mut self, n: usize) {
        if self.r.len() > n {
            let k = self.r.len() - n;
            self.r.drain(..k);
        }
    }
    /// Takes up to `max` values from the start of the lowest range.
    pub fn pop_first(&mut self, max: u64) -> Option<(u64, u64)> {
        let (s, e) = *self.r.first()?;
        let end = e.min(s.saturating_add(max));
        if end >= e {
            self.r.remove(0);
        } else {
            self.r[0].0 = end;
        }
        Some((s, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_remove_splits() {
        let mut r = RangeSet::new();
        assert!(r.insert(10, 20));
        assert!(r.insert(30, 40));
        assert!(!r.insert(12, 18));
        assert!(r.insert(20, 30));
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 40)]);
        r.remove(15, 25);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 15), (25, 40)]);
        assert!(r.contains(14) && !r.contains(15) && r.contains(25));
        assert!(r.contains_range(26, 40) && !r.contains_range(14, 26));
        assert!(r.would_add_range(17, 24) && !r.would_add_range(15, 25));
        assert!(
            !r.would_add_range(12, 14) && !r.would_add_range(40, 41) && !r.would_add_range(5, 5)
        );
        r.remove_below(30);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(30, 40)]);
        assert_eq!(r.pop_first(4), Some((30, 34)));
        assert_eq!(r.pop_first(100), Some((34, 40)));
        assert!(r.is_empty());
    }

    #[test]
    fn matches_a_bitmap_model() {
        let mut rng = crate::rng::Rng::new(7);
        let mut r = RangeSet::new();
        let mut model = [false; 200];
        for _ in 0..2000 {
            let s = rng.below(200);
            let e = (s + rng.below(20)).min(200);
            if rng.chance(0.6) {
                r.insert(s, e);
                model[s as usize..e as usize].fill(true);
            } else {
                r.remove(s, e);
                model[s as usize..e as usize].fill(false);
            }
            for (v, m) in model.iter().enumerate() {
                assert_eq!(r.contains(v as u64), *m);
            }
            let v: Vec<_> = r.iter().collect();
            assert!(v.windows(2).all(|w| w[0].1 < w[1].0));
        }
    }
}
