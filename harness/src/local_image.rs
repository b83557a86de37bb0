//! `--image local` (`CDI_HARNESS_IMAGE=local` for `cargo test`): the smallest image in
//! which the host's own `nvidia-smi` runs, built here and imported into the engine, so
//! that an offline GPU host needs no registry.
//!
//! The CDI spec mounts `nvidia-smi` and `libnvidia-ml` from the host into the container,
//! but not the C library they are linked against: the image must bring the host's glibc
//! at the paths the loader looks for it. So the image is the sim's static busybox plus
//! exactly the files `ldd` names for the host's `nvidia-smi` and `libnvidia-ml.so.1`
//! (the NVIDIA libraries themselves left out: the spec mounts those). It is what
//! `scripts/gpu-e2e.sh` built by hand before; the script now asks for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sim::SimError;

/// The `--image` value that asks for this image.
pub const LOCAL: &str = "local";

/// The reference the image is imported as.
pub const LOCAL_IMAGE: &str = "cdi-harness/host-gpu:local";

/// Why the image could not be built or imported; each says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum LocalImageError {
    /// The host's `nvidia-smi` was not found, so there is nothing to build the image for.
    #[error(
        "--image local: no nvidia-smi on this machine (looked in PATH and {tried}): install the NVIDIA driver's utilities, or pass an image that has been loaded (docker load -i IMAGE.tar)"
    )]
    NoNvidiaSmi {
        /// The places looked at.
        tried: String,
    },
    /// `ldd` could not list a program's libraries.
    #[error(
        "--image local: `ldd {program}` failed: {message} (is ldd installed? it comes with glibc)"
    )]
    Ldd {
        /// The program.
        program: PathBuf,
        /// What happened.
        message: String,
    },
    /// A library could not be read.
    #[error("--image local: cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The busybox base or the import failed.
    #[error("--image local: {0}")]
    Sim(#[from] SimError),
}

/// Where `nvidia-smi` is looked for besides PATH: NixOS's system profile and the
/// driver's own directory, then the usual distribution places.
const NVIDIA_SMI_PLACES: &[&str] = &[
    "/run/current-system/sw/bin/nvidia-smi",
    "/run/opengl-driver/bin/nvidia-smi",
    "/usr/bin/nvidia-smi",
    "/usr/local/nvidia/bin/nvidia-smi",
];

/// The host's `nvidia-smi`: PATH first, then [`NVIDIA_SMI_PLACES`].
pub fn find_nvidia_smi() -> Result<PathBuf, LocalImageError> {
    let on_path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nvidia-smi"))
                .collect()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(NVIDIA_SMI_PLACES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| LocalImageError::NoNvidiaSmi {
            tried: NVIDIA_SMI_PLACES.join(", "),
        })
}

/// The absolute paths `ldd` prints, the loader included: `libc.so.6 => /lib/…/libc.so.6
/// (0x…)` and `/lib64/ld-linux-x86-64.so.2 (0x…)`; `linux-vdso.so.1` and `not found`
/// lines have none.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // `A => B`: B is the file loaded; A too when absolute (NixOS's loader line names
        // the interpreter path the program asks for on the left).
        let paths: Vec<&str> = match words.as_slice() {
            [a, "=>", b, ..] => vec![*a, *b],
            [p, ..] => vec![*p],
            [] => Vec::new(),
        };
        for p in paths.into_iter().filter(|p| p.starts_with('/')) {
            let p = PathBuf::from(p);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The libraries `programs` load, by `ldd`, without the NVIDIA ones the spec mounts.
pub fn libraries_of(programs: &[PathBuf]) -> Result<Vec<PathBuf>, LocalImageError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for program in programs {
        let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.clone());
        let run = Command::new("ldd")
            .arg(&real)
            .output()
            .map_err(|e| LocalImageError::Ldd {
                program: real.clone(),
                message: e.to_string(),
            })?;
        let text = String::from_utf8_lossy(&run.stdout);
        // A static program: `not a dynamic executable`, exit 1, nothing to copy.
        if !run.status.success() && !String::from_utf8_lossy(&run.stderr).contains("not a dynamic")
        {
            return Err(LocalImageError::Ldd {
                program: real,
                message: format!(
                    "{}: {}",
                    run.status,
                    String::from_utf8_lossy(&run.stderr).trim()
                ),
            });
        }
        for lib in parse_ldd(&text) {
            let nvidia = lib
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libnvidia-"));
            if !nvidia && !out.contains(&lib) {
                out.push(lib);
            }
        }
    }
    Ok(out)
}

/// The image's root file system as a tar: busybox, and each file of `files` (read
/// through symlinks) at its own absolute path.
pub fn rootfs_tar(files: &[PathBuf]) -> Result<Vec<u8>, LocalImageError> {
    let mut extra = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|source| LocalImageError::Read {
            path: f.clone(),
            source,
        })?;
        let rel = f
            .strip_prefix("/")
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        extra.push((rel, bytes, 0o755));
    }
    Ok(crate::sim::busybox_rootfs_tar_with(&extra)?)
}

/// The tar for this host: busybox and the glibc files its `nvidia-smi` and NVML need.
pub fn host_rootfs_tar() -> Result<Vec<u8>, LocalImageError> {
    let mut programs = vec![find_nvidia_smi()?];
    if let Some(nvml) = crate::gpu::NVML_FALLBACK_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    {
        programs.push(nvml.to_path_buf());
    }
    rootfs_tar(&libraries_of(&programs)?)
}

/// Builds the host's image and imports it as [`LOCAL_IMAGE`]; returns the reference.
pub async fn build_and_import(
    docker: &bollard::Docker,
    timeout: std::time::Duration,
) -> Result<String, LocalImageError> {
    let tar = tokio::task::spawn_blocking(host_rootfs_tar)
        .await
        .map_err(|e| LocalImageError::Ldd {
            program: PathBuf::from("nvidia-smi"),
            message: format!("the image build crashed: {e}"),
        })??;
    crate::sim::import_image(docker, LOCAL_IMAGE, tar, timeout).await?;
    Ok(LOCAL_IMAGE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_library_paths_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5b5f2000)\n\
            \tlibpthread.so.0 => /lib/x86_64-linux-gnu/libpthread.so.0 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
            \tlibgone.so.1 => not found\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/lib/x86_64-linux-gnu/libpthread.so.0",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let nix = "\tlibc.so.6 => /nix/store/abc-glibc-2.40/lib/libc.so.6 (0x7f)\n\t/nix/store/abc-glibc-2.40/lib/ld-linux-x86-64.so.2 => /nix/store/abc-glibc-2.40/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(parse_ldd(nix).len(), 3);
    }

    #[test]
    fn a_script_or_a_static_program_needs_no_library() {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("nvidia-smi");
        std::fs::write(&script, "#!/bin/sh\necho GPU 0\n").expect("write");
        match libraries_of(&[script]) {
            Ok(libs) => assert!(libs.is_empty(), "{libs:?}"),
            Err(LocalImageError::Ldd { message, .. }) if message.contains("No such file") => {
                crate::testutil::cannot_run("no ldd here");
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_dynamic_program_gets_its_glibc_and_never_the_nvidia_libraries() {
        let Some(env) = ["/usr/bin/env", "/bin/env"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        else {
            crate::testutil::cannot_run("no /usr/bin/env to read libraries from");
            return;
        };
        let libs = libraries_of(&[env]).expect("ldd works here");
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            !libs
                .iter()
                .any(|l| l.to_string_lossy().contains("libnvidia"))
        );
    }
}
