//! The store's data filesystem as it reports it: size, free space, and whether free space fell
//! below the reserve (then the master places no new replica here).
use std::path::{Path, PathBuf};
use vasto_wire::DiskReport;

/// The reserve when none is configured: 5% of the filesystem, at most 1 GiB.
pub const DEFAULT_RESERVE_FRACTION: f64 = 0.05;
/// Upper bound of the default reserve.
pub const DEFAULT_RESERVE_CAP: u64 = 1 << 30;

/// Reads the filesystem holding a data directory.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    dir: PathBuf,
    /// Free bytes below which the disk counts as full (`None`: the default reserve).
    min_free: Option<u64>,
}

impl DiskWatch {
    /// Watches the filesystem of `dir`, full below `min_free` free bytes (default reserve if `None`).
    pub fn new(dir: &Path, min_free: Option<u64>) -> Self {
        Self { dir: dir.to_path_buf(), min_free }
    }

    /// The filesystem now; all zero (and not full) when it cannot be read.
    pub fn report(&self) -> DiskReport {
        let Some((capacity_bytes, free_bytes)) = statvfs(&self.dir) else { return DiskReport::default() };
        let reserve = self.min_free.unwrap_or_else(|| default_reserve(capacity_bytes));
        DiskReport { capacity_bytes, free_bytes, full: free_bytes < reserve }
    }
}

/// 5% of `capacity`, at most [`DEFAULT_RESERVE_CAP`].
pub fn default_reserve(capacity: u64) -> u64 {
    ((capacity as f64 * DEFAULT_RESERVE_FRACTION) as u64).min(DEFAULT_RESERVE_CAP)
}

/// (size, bytes available to an unprivileged user) of the filesystem holding `dir`.
fn statvfs(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some(((stat.f_blocks as u64).saturating_mul(block), (stat.f_bavail as u64).saturating_mul(block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_free_space_makes_the_disk_full() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = DiskWatch::new(dir.path(), Some(0)).report();
        assert!(free.capacity_bytes > 0 && free.free_bytes <= free.capacity_bytes);
        assert!(!free.full);
        assert!(DiskWatch::new(dir.path(), Some(u64::MAX)).report().full);
        assert_eq!(DiskWatch::new(&dir.path().join("missing"), None).report(), DiskReport::default());
    }

    #[test]
    fn the_default_reserve_is_five_percent_up_to_a_gibibyte() {
        assert_eq!(default_reserve(100 << 20), 5 << 20);
        assert_eq!(default_reserve(1 << 40), DEFAULT_RESERVE_CAP);
        assert_eq!(default_reserve(0), 0);
    }
}
