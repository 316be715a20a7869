//! Sorted, non-overlapping byte ranges.

use serde::{Deserialize, Serialize};

/// A set of byte ranges `[start, start + len)`, kept sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extents {
    ranges: Vec<(u64, u64)>,
}

impl Extents {
    pub fn new() -> Self {
        Self::default()
    }

    /// `[0, size)`.
    pub fn whole(size: u64) -> Self {
        let mut e = Self::new();
        e.add(0, size);
        e
    }

    /// Adds `[start, start + len)`. Appending in increasing order is O(1); out-of-order inserts
    /// are merged correctly too.
    pub fn add(&mut self, start: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = start.saturating_add(len);
        if let Some(last) = self.ranges.last_mut() {
            let last_end = last.0 + last.1;
            if start >= last.0 {
                if start <= last_end {
                    last.1 = last_end.max(end) - last.0;
                    return;
                }
                self.ranges.push((start, end - start));
                return;
            }
        } else {
            self.ranges.push((start, end - start));
            return;
        }
        // Out of order: insert and re-merge.
        self.ranges.push((start, end - start));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, l) in &self.ranges {
            match merged.last_mut() {
                Some(m) if s <= m.0 + m.1 => m.1 = (m.0 + m.1).max(s + l) - m.0,
                _ => merged.push((s, l)),
            }
        }
        self.ranges = merged;
    }

    /// Adds every range of `other` shifted by `offset`.
    pub fn add_shifted(&mut self, other: &Extents, offset: u64) {
        for &(s, l) in &other.ranges {
            self.add(s + offset, l);
        }
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Total bytes covered.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).sum()
    }

    /// The same set cut to `[0, size)`.
    pub fn clamp_to(mut self, size: u64) -> Self {
        self.ranges.retain(|r| r.0 < size);
        if let Some(last) = self.ranges.last_mut() {
            last.1 = last.1.min(size - last.0);
        }
        self
    }

    /// Everything in `[0, size)` not in this set.
    pub fn complement(&self, size: u64) -> Extents {
        let mut out = Extents::new();
        let mut pos = 0;
        for &(s, l) in &self.ranges {
            if s >= size {
                break;
            }
            out.add(pos, s.saturating_sub(pos));
            pos = pos.max(s + l);
        }
        if pos < size {
            out.add(pos, size - pos);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_and_out_of_order() {
        let mut e = Extents::new();
        e.add(0, 10);
        e.add(10, 5);
        e.add(20, 5);
        e.add(12, 10);
        e.add(100, 0);
        assert_eq!(e.ranges(), &[(0, 25)]);
        e.add(50, 10);
        e.add(30, 5);
        assert_eq!(e.ranges(), &[(0, 25), (30, 5), (50, 10)]);
        assert_eq!(e.total(), 40);
        assert_eq!(e.complement(70).ranges(), &[(25, 5), (35, 15), (60, 10)]);
        assert_eq!(
            e.clone().clamp_to(52).ranges(),
            &[(0, 25), (30, 5), (50, 2)]
        );
    }
}
