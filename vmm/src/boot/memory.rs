//! Guest RAM: the regions backing it and the e820 map that describes it to the kernel.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START, WINDOW_BASE};

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {0} bytes of guest memory")]
    Allocate(u64, #[source] vm_memory::mmap::FromRangesError),
}

/// Kind of an e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved, not to be used by the OS.
    Reserved = 2,
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// The guest-physical RAM ranges for `mem_bytes` of RAM: below the MMIO gap, then above 4 GiB.
pub fn ram_ranges(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_bytes as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_bytes - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// Allocates anonymous memory for the guest's RAM.
pub fn create_guest_memory(mem_bytes: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&ram_ranges(mem_bytes))
        .map_err(|e| MemoryError::Allocate(mem_bytes, e))
}

/// The e820 map for `mem_bytes` of RAM: conventional memory, the legacy hole left out, high RAM,
/// and the coherent window of `window_bytes` (reserved: the guest kernel must not use it as RAM).
pub fn e820_map(mem_bytes: u64, window_bytes: u64) -> Vec<E820Entry> {
    let ram = |addr, end: u64| E820Entry {
        addr,
        size: end - addr,
        kind: E820Kind::Ram,
    };
    let mut map = vec![ram(0, EBDA_START)];
    let low_end = mem_bytes.min(MMIO_GAP_START);
    map.push(ram(HIMEM_START, low_end));
    if mem_bytes > MMIO_GAP_START {
        map.push(ram(MMIO_GAP_END, MMIO_GAP_END + mem_bytes - MMIO_GAP_START));
    }
    if window_bytes > 0 {
        map.push(E820Entry {
            addr: WINDOW_BASE,
            size: window_bytes,
            kind: E820Kind::Reserved,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region_and_skips_legacy_hole() {
        assert_eq!(ram_ranges(256 << 20), vec![(GuestAddress(0), 256 << 20)]);
        let map = e820_map(256 << 20, 0);
        assert_eq!(map.len(), 2);
        assert_eq!(map[0].addr + map[0].size, EBDA_START);
        assert_eq!(map[1].addr, HIMEM_START);
        assert_eq!(map[1].addr + map[1].size, 256 << 20);
    }

    #[test]
    fn large_guest_is_split_around_the_mmio_gap() {
        let mem = 5u64 << 30;
        let ranges = ram_ranges(mem);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(ranges.iter().map(|r| r.1 as u64).sum::<u64>(), mem);
        let map = e820_map(mem, 0);
        assert_eq!(
            map.last().unwrap().addr + map.last().unwrap().size,
            MMIO_GAP_END + mem - MMIO_GAP_START
        );
        assert!(map
            .iter()
            .all(|e| e.addr + e.size <= MMIO_GAP_START || e.addr >= MMIO_GAP_END));
    }

    #[test]
    fn window_is_reserved_above_ram() {
        let map = e820_map(1 << 30, 256 << 20);
        let w = map.last().unwrap();
        assert_eq!(
            (w.addr, w.size, w.kind),
            (WINDOW_BASE, 256 << 20, E820Kind::Reserved)
        );
        assert!(map[..map.len() - 1]
            .iter()
            .all(|e| e.kind == E820Kind::Ram && e.addr + e.size <= WINDOW_BASE));
    }
}
