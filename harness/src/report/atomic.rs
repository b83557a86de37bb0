//! One atomic writer for every output file the harness writes.

#[allow(unused_imports)]
use super::*;

/// Writes a file so that readers only ever see the old content or the complete new one:
/// the bytes go to a hidden temporary file in the same directory (same filesystem, so the
/// rename is atomic), are flushed to disk, and the temporary file is then renamed over
/// `path`. On any error the temporary file is removed and `path` is left as it was.
/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename),
/// for the other files whose readers must never see half of one: history indexes, HTML
/// pages, copied `flake.lock`s.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    write_atomically(path, |w| w.write_all(bytes))
}

pub(super) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), ReportError> {
    let fail = |step: &'static str| {
        move |source: io::Error| ReportError::Write {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(fail("creating its directory"))?;

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".to_owned());
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(fail("creating a temporary file"))?;

    // The temporary file is private (0600); give the report the permissions of the file it
    // replaces, or ordinary ones, so CI artefact uploads and other users can read it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let permissions = fs::metadata(path)
            .map(|m| m.permissions())
            .unwrap_or_else(|_| fs::Permissions::from_mode(0o644));
        temp.as_file()
            .set_permissions(permissions)
            .map_err(fail("setting permissions"))?;
    }

    let mut writer = BufWriter::new(temp);
    write(&mut writer).map_err(fail("writing"))?;
    let temp = writer
        .into_inner()
        .map_err(|e| fail("writing")(e.into_error()))?;
    temp.as_file()
        .sync_all()
        .map_err(fail("flushing to disk"))?;
    temp.persist(path)
        .map_err(|e| fail("replacing the old file")(e.error))?;

    // Make the rename itself durable. Some filesystems refuse to sync a directory; the
    // report is complete and in place by now, so that is not worth failing the run for.
    #[cfg(unix)]
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
