//! The shape rules of an ivshmem region, in one place: the config validator
//! checks a device table with them, and `ivshmem::RegionLayout` checks the
//! region it creates or joins with them.
//!
//! Specification: a region has [`MIN_PEERS`]..=[`MAX_PEERS`] peers; its R/W
//! section and each output section are multiples of [`SECTION_ALIGN`] of at
//! most [`MAX_SECTION_SIZE`] (0 allowed), and not both 0. Region names are
//! ids (`[A-Za-z0-9_-]{1,32}`, [`valid_region_name`]), safe as file-name
//! parts.

/// Fewest peers a region has room for.
pub const MIN_PEERS: u16 = 2;
/// Most peers a region has room for.
pub const MAX_PEERS: u16 = 16;
/// Sections are multiples of this (a mappable page).
pub const SECTION_ALIGN: u64 = 0x1000;
/// Largest R/W or output section.
pub const MAX_SECTION_SIZE: u64 = 1 << 30;
/// Why a region with both sections empty is refused.
pub const BOTH_EMPTY: &str = "an ivshmem device needs rw_size or output_size (or both) above 0";

/// Why `n` peers is not a region's size, if it is not.
pub fn peers_error(n: u64) -> Option<String> {
    (!(u64::from(MIN_PEERS)..=u64::from(MAX_PEERS)).contains(&n))
        .then(|| format!("{n} peers; an ivshmem region has {MIN_PEERS} to {MAX_PEERS}"))
}

/// Why `size` is not a section size, if it is not.
pub fn section_error(size: u64) -> Option<String> {
    (!size.is_multiple_of(SECTION_ALIGN) || size > MAX_SECTION_SIZE)
        .then(|| format!("{size:#x} must be a multiple of 4 KiB and at most 1 GiB"))
}

/// Whether `name` is a valid region name (an id).
pub fn valid_region_name(name: &str) -> bool {
    super::validate::valid_id(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_and_the_config_refuse_the_same_shapes_in_the_same_words() {
        use crate::ivshmem::RegionLayout;
        assert_eq!(peers_error(2), None);
        assert_eq!(peers_error(16), None);
        let e = RegionLayout::new(17, 0x1000, 0).unwrap_err();
        assert_eq!(e, format!("max_peers: {}", peers_error(17).unwrap()));
        assert_eq!(section_error(0), None);
        let e = RegionLayout::new(2, 0x1001, 0).unwrap_err();
        assert_eq!(e, format!("rw_size: {}", section_error(0x1001).unwrap()));
        assert_eq!(RegionLayout::new(2, 0, 0).unwrap_err(), BOTH_EMPTY);
        assert!(valid_region_name("flash-0") && !valid_region_name("a/b"));
    }
}
