//! Allocation of window pages from this node's slice for the guest driver (`ALLOC`/`FREE`
//! requests of the offload device). Freed pages go through a DSM reset (every copy
//! invalidated, contents zeroed) before they can be handed out again; lost pages are retired.

use std::ops::Range;

use super::protocol::PageNo;

/// Why an allocation or free was refused (mapped to an errno for the guest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("invalid page count {0}")]
    BadCount(u64),
    #[error("no free run of {0} pages")]
    NoSpace(u64),
    #[error("pages {first}..+{count} are not an allocated run of this node's slice")]
    NotAllocated { first: PageNo, count: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    Used,
    /// Freed, waiting for the DSM to reset it.
    Resetting,
    /// Lost for good; never handed out again.
    Retired,
}

/// First-fit allocator over one slice.
#[derive(Debug)]
pub struct Allocator {
    slice: Range<PageNo>,
    slots: Vec<Slot>,
    /// Where the next search starts (pages before it are not free).
    hint: usize,
}

impl Allocator {
    /// Every page of `slice` free.
    pub fn new(slice: Range<PageNo>) -> Self {
        let n = (slice.end - slice.start) as usize;
        Self {
            slice,
            slots: vec![Slot::Free; n],
            hint: 0,
        }
    }

    /// Allocates `count` contiguous pages; returns the first.
    pub fn alloc(&mut self, count: u64) -> Result<PageNo, AllocError> {
        if count == 0 || count > self.slots.len() as u64 {
            return Err(AllocError::BadCount(count));
        }
        let count = count as usize;
        let mut run = 0;
        for i in self.hint..self.slots.len() {
            run = if self.slots[i] == Slot::Free {
                run + 1
            } else {
                0
            };
            if run == count {
                let first = i + 1 - count;
                self.slots[first..=i].fill(Slot::Used);
                if first == self.hint {
                    self.hint = i + 1;
                }
                return Ok(self.slice.start + first as u64);
            }
        }
        Err(AllocError::NoSpace(count as u64))
    }

    /// Frees an allocated run; returns the pages the DSM must now reset.
    pub fn free(&mut self, first: PageNo, count: u64) -> Result<Range<PageNo>, AllocError> {
        let bad = AllocError::NotAllocated { first, count };
        if count == 0 || first < self.slice.start {
            return Err(bad);
        }
        let start = (first - self.slice.start) as usize;
        let end = start.checked_add(count as usize).ok_or(bad.clone())?;
        if end > self.slots.len() || self.slots[start..end].iter().any(|s| *s != Slot::Used) {
            return Err(bad);
        }
        self.slots[start..end].fill(Slot::Resetting);
        Ok(first..first + count)
    }

    /// Frees every allocated page at once (the guest's driver was reset, so nothing holds a
    /// run any more); returns the pages the DSM must now reset.
    pub fn free_all(&mut self) -> Vec<PageNo> {
        let mut pages = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if *s == Slot::Used {
                *s = Slot::Resetting;
                pages.push(self.slice.start + i as u64);
            }
        }
        pages
    }

    /// The DSM finished resetting `page`: free again, or retired if it was lost.
    pub fn reset_done(&mut self, page: PageNo, retired: bool) {
        let Some(i) = page.checked_sub(self.slice.start).map(|i| i as usize) else {
            return;
        };
        if let Some(s) = self.slots.get_mut(i).filter(|s| **s == Slot::Resetting) {
            *s = if retired { Slot::Retired } else { Slot::Free };
            if !retired {
                self.hint = self.hint.min(i);
            }
        }
    }

    /// Pages currently allocated.
    pub fn used(&self) -> usize {
        self.slots.iter().filter(|s| **s == Slot::Used).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_all_releases_every_run_through_a_reset() {
        let mut a = Allocator::new(10..20);
        assert_eq!(a.alloc(2), Ok(10));
        assert_eq!(a.alloc(3), Ok(12));
        assert_eq!(a.free(10, 2), Ok(10..12));
        assert_eq!(a.free_all(), vec![12, 13, 14]);
        assert_eq!(a.used(), 0);
        assert_eq!(
            a.alloc(10),
            Err(AllocError::NoSpace(10)),
            "not before the resets"
        );
        for p in 10..15 {
            a.reset_done(p, false);
        }
        assert_eq!(a.alloc(10), Ok(10));
    }

    #[test]
    fn first_fit_and_reuse_after_reset() {
        let mut a = Allocator::new(100..110);
        assert_eq!(a.alloc(3), Ok(100));
        assert_eq!(a.alloc(2), Ok(103));
        assert_eq!(a.free(100, 3), Ok(100..103));
        // Not reusable until reset.
        assert_eq!(a.alloc(5), Ok(105));
        assert_eq!(a.alloc(1), Err(AllocError::NoSpace(1)));
        for p in 100..103 {
            a.reset_done(p, false);
        }
        assert_eq!(a.alloc(3), Ok(100));
        assert_eq!(a.used(), 10);
    }

    #[test]
    fn bad_frees_are_refused_and_change_nothing() {
        let mut a = Allocator::new(0..8);
        assert_eq!(a.alloc(2), Ok(0));
        assert!(a.free(0, 3).is_err()); // page 2 not allocated
        assert!(a.free(1, 0).is_err());
        assert!(a.free(7, u64::MAX).is_err());
        assert_eq!(a.free(0, 2), Ok(0..2));
        assert!(a.free(0, 2).is_err()); // double free
        assert_eq!(a.alloc(0), Err(AllocError::BadCount(0)));
        assert_eq!(a.alloc(9), Err(AllocError::BadCount(9)));
    }

    #[test]
    fn retired_pages_are_never_reused() {
        let mut a = Allocator::new(0..2);
        assert_eq!(a.alloc(2), Ok(0));
        a.free(0, 2).unwrap();
        a.reset_done(0, true);
        a.reset_done(1, false);
        assert_eq!(a.alloc(1), Ok(1));
        assert_eq!(a.alloc(1), Err(AllocError::NoSpace(1)));
    }
}
