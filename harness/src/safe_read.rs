//! Reading a user-named input file without being fooled by it: only a regular file
//! (checked on the open descriptor, opened non-blocking so a FIFO can never hang the
//! harness), and never more than a stated limit (so `/dev/zero` or a huge file cannot
//! exhaust memory). Scenario files and CDI specs both go through here; each caller turns
//! [`SafeReadError`] into its own error, which names the file and what to do.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file could not be read safely.
#[derive(Debug, thiserror::Error)]
pub enum SafeReadError {
    /// Opening, inspecting or reading it failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not a regular file; the words say what it is.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// It is larger than the limit (`size` is what was seen: the file's size, or the
    /// bytes read before stopping).
    #[error("it has more than {limit} bytes ({size})")]
    TooLarge {
        /// Bytes seen.
        size: u64,
        /// The limit.
        limit: u64,
    },
}

/// The bytes of the regular file at `path`, at most `limit` of them.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, SafeReadError> {
    // The path's own metadata first: a FIFO is refused before it is even opened.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(SafeReadError::NotRegular(kind_of(&meta)));
    }
    // O_NONBLOCK: a file swapped for a FIFO between the check and the open must not
    // block either; the descriptor's own metadata is what counts.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(SafeReadError::NotRegular(kind_of(&meta)));
    }
    if meta.len() > limit {
        return Err(SafeReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(SafeReadError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// What a non-regular file is, in words.
pub fn kind_of(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_within_the_limit_are_read_and_others_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a");
        std::fs::write(&f, b"hello").expect("write");
        assert_eq!(read_regular_file(&f, 5).expect("reads"), b"hello");
        assert!(matches!(
            read_regular_file(&f, 4),
            Err(SafeReadError::TooLarge { size: 5, limit: 4 })
        ));
        assert!(matches!(
            read_regular_file(dir.path(), 10),
            Err(SafeReadError::NotRegular("a directory"))
        ));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        assert!(matches!(
            read_regular_file(&fifo, 10),
            Err(SafeReadError::NotRegular("a FIFO (named pipe)"))
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        // A device that never ends is refused before it is read.
        assert!(matches!(
            read_regular_file(Path::new("/dev/zero"), 10),
            Err(SafeReadError::NotRegular("a character device"))
        ));
    }
}
