//! The tiny test image: the host's static busybox and its applet links, imported offline.
//!
//! The simulation must work on a machine without registry access (CI runners, air-gapped
//! labs), so the image is built from a binary already on the host instead of pulled.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::SimError;

/// The reference the harness imports the busybox image as.
pub const SIM_IMAGE: &str = "cdi-harness/busybox:sim";
/// Where busybox is looked for first (Debian's `busybox-static` installs it there).
const BUSYBOX_DEFAULT: &str = "/bin/busybox";
/// Fixed modification time of every tar entry (2023-11-14), so the tar is byte-for-byte
/// the same on every run.
const MTIME: u64 = 1_700_000_000;

/// Directories every image gets: the mount points runc needs (`dev`, `proc`, `sys`),
/// the places applets and mounts land, and scratch space.
const DIRS: [(&str, u32); 14] = [
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("root", 0o700),
    ("run", 0o755),
    ("sbin", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

/// Why an ELF file is judged dynamically linked (`Some(reason)`), or `None` if static.
/// An executable with a `PT_INTERP` program header needs a loader (and a libc) that an
/// empty image does not have. Not ELF at all also counts as unusable.
fn dynamic_reason(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 52 || &bytes[0..4] != b"\x7fELF" {
        return Some("not an ELF executable".to_string());
    }
    let is64 = match bytes[4] {
        1 => false,
        2 => true,
        c => return Some(format!("unknown ELF class {c}")),
    };
    let le = match bytes[5] {
        1 => true,
        2 => false,
        d => return Some(format!("unknown ELF data encoding {d}")),
    };
    let rd = |off: usize, len: usize| -> Option<u64> {
        let s = bytes.get(off..off + len)?;
        let mut v: u64 = 0;
        for i in 0..len {
            let b = if le { s[len - 1 - i] } else { s[i] };
            v = (v << 8) | u64::from(b);
        }
        Some(v)
    };
    let (phoff, phentsize, phnum) = if is64 {
        (rd(0x20, 8), rd(0x36, 2), rd(0x38, 2))
    } else {
        (rd(0x1C, 4), rd(0x2A, 2), rd(0x2C, 2))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Some("truncated ELF header".to_string());
    };
    for i in 0..phnum {
        let off = phoff.saturating_add(i.saturating_mul(phentsize));
        let Ok(off) = usize::try_from(off) else {
            return Some("program header out of range".to_string());
        };
        let Some(p_type) = rd(off, 4) else {
            return Some("truncated program headers".to_string());
        };
        if p_type == 3 {
            return Some("it has an ELF interpreter (PT_INTERP)".to_string());
        }
    }
    None
}

/// Candidate busybox paths: [`BUSYBOX_DEFAULT`], then `busybox` in every PATH entry.
fn busybox_candidates() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from(BUSYBOX_DEFAULT)];
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("busybox");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The static busybox the image is built from: the first candidate that exists and is
/// statically linked.
pub fn find_static_busybox() -> Result<PathBuf, SimError> {
    let mut dynamic: Option<(PathBuf, String)> = None;
    let candidates = busybox_candidates();
    for path in &candidates {
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        match dynamic_reason(&bytes) {
            None => return Ok(path.clone()),
            Some(reason) => {
                if dynamic.is_none() {
                    dynamic = Some((path.clone(), reason));
                }
            }
        }
    }
    match dynamic {
        Some((path, detail)) => Err(SimError::BusyboxDynamic { path, detail }),
        None => Err(SimError::BusyboxNotFound {
            tried: vec![BUSYBOX_DEFAULT.to_string(), "`busybox` on PATH".to_string()],
        }),
    }
}

/// The applet paths (relative, e.g. `usr/bin/awk`) busybox says it provides; falls back
/// to `bin/<name>` when this busybox has no `--list-full`.
fn applet_paths(busybox: &Path) -> Vec<String> {
    let run = |flag: &str| -> Option<String> {
        let out = std::process::Command::new(busybox)
            .arg(flag)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let mut paths: Vec<String> = if let Some(full) = run("--list-full") {
        full.lines()
            .map(|l| l.trim().trim_start_matches('/').to_string())
            .collect()
    } else if let Some(names) = run("--list") {
        names.lines().map(|l| format!("bin/{}", l.trim())).collect()
    } else {
        Vec::new()
    };
    paths.retain(|p| {
        !p.is_empty()
            && p != "bin/busybox"
            && !p.ends_with('/')
            && p.split('/').all(|c| !c.is_empty() && c != "..")
    });
    if !paths.iter().any(|p| p == "bin/sh") {
        paths.push("bin/sh".to_string());
    }
    paths.sort();
    paths.dedup();
    paths
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

fn tar_err(what: &str, e: std::io::Error) -> SimError {
    SimError::io(format!("building the image tar ({what})"), e)
}

/// A rootfs tar with the host's static busybox (found at /bin/busybox or `busybox` on
/// PATH; a dynamically linked one is refused with an error naming Debian's
/// `busybox-static` package), its applet links (hard links to `bin/busybox`), the
/// directories runc needs and a minimal `/etc/passwd` and `/etc/group`.
pub fn busybox_rootfs_tar() -> Result<Vec<u8>, SimError> {
    busybox_rootfs_tar_with(&[])
}

/// [`busybox_rootfs_tar`] plus `extra` regular files (path relative to the root, its
/// bytes, its mode) with their parent directories: the host's glibc for the image that
/// runs the host's own `nvidia-smi` (`crate::local_image`).
pub fn busybox_rootfs_tar_with(extra: &[(String, Vec<u8>, u32)]) -> Result<Vec<u8>, SimError> {
    let busybox = find_static_busybox()?;
    let mut file = std::fs::File::open(&busybox)
        .map_err(|e| SimError::io(format!("opening {}", busybox.display()), e))?;
    let mut binary = Vec::new();
    file.read_to_end(&mut binary)
        .map_err(|e| SimError::io(format!("reading {}", busybox.display()), e))?;
    let applets = applet_paths(&busybox);

    let mut b = tar::Builder::new(Vec::new());
    let mut dirs: Vec<(String, u32)> = DIRS.iter().map(|(d, m)| (d.to_string(), *m)).collect();
    for applet in applets.iter().chain(extra.iter().map(|(p, _, _)| p)) {
        let mut parent = Path::new(applet).parent();
        while let Some(p) = parent {
            let s = p.to_string_lossy().into_owned();
            if !s.is_empty() && !dirs.iter().any(|(d, _)| *d == s) {
                dirs.push((s, 0o755));
            }
            parent = p.parent();
        }
    }
    dirs.sort();
    for (dir, mode) in &dirs {
        let mut h = header(tar::EntryType::Directory, *mode, 0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .map_err(|e| tar_err(dir, e))?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, binary.len() as u64);
    b.append_data(&mut h, "bin/busybox", binary.as_slice())
        .map_err(|e| tar_err("bin/busybox", e))?;
    for (name, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        b.append_data(&mut h, name, text.as_bytes())
            .map_err(|e| tar_err(name, e))?;
    }
    // A file of `extra` replaces the applet link of the same path (one entry per path).
    // Hard links, not symlinks: every engine unpacks the image, and a symlink is an
    // inode to allocate where a hard link is only a name (measured: the suite's largest
    // CPU cost was ext4 allocating inodes, 400 of them per engine for the applets).
    for applet in applets
        .iter()
        .filter(|a| !extra.iter().any(|(p, _, _)| p == *a))
    {
        let mut h = header(tar::EntryType::Link, 0o755, 0);
        b.append_link(&mut h, applet, "bin/busybox")
            .map_err(|e| tar_err(applet, e))?;
    }
    for (path, bytes, mode) in extra {
        let mut h = header(tar::EntryType::Regular, *mode, bytes.len() as u64);
        b.append_data(&mut h, path, bytes.as_slice())
            .map_err(|e| tar_err(path, e))?;
    }
    b.into_inner().map_err(|e| tar_err("finishing", e))
}

/// Splits `repo:tag` (a port in the registry part is not a tag); no tag means `latest`.
fn split_reference(reference: &str) -> (&str, &str) {
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Imports `tar` (a rootfs, as from [`busybox_rootfs_tar`]) as image `reference` (e.g.
/// [`SIM_IMAGE`]) through the API, like `docker import` (`POST /images/create?fromSrc=-`;
/// bollard's `import_image` is `docker load`, which wants a saved image, not a rootfs),
/// with `CMD ["/bin/sh"]`. Bounded by `timeout`; checks the image exists afterwards.
pub async fn import_image(
    docker: &bollard::Docker,
    reference: &str,
    tar: Vec<u8>,
    timeout: Duration,
) -> Result<(), SimError> {
    let (repo, tag) = split_reference(reference);
    let options = bollard::query_parameters::CreateImageOptions {
        from_src: Some("-".to_string()),
        repo: Some(repo.to_string()),
        tag: Some(tag.to_string()),
        changes: vec!["CMD [\"/bin/sh\"]".to_string()],
        ..Default::default()
    };
    let import = async {
        let mut stream =
            docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| SimError::Import {
                reference: reference.to_string(),
                detail: e.to_string(),
            })?;
        }
        docker
            .inspect_image(reference)
            .await
            .map_err(|e| SimError::Import {
                reference: reference.to_string(),
                detail: format!("the engine reported success but the image is not there: {e}"),
            })?;
        Ok(())
    };
    match tokio::time::timeout(timeout, import).await {
        Ok(result) => result,
        Err(_) => Err(SimError::ImportTimeout {
            reference: reference.to_string(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                (path, e.header().entry_type(), link)
            })
            .collect()
    }

    #[test]
    fn rootfs_tar_has_busybox_and_sh_link() {
        let tar_bytes = match busybox_rootfs_tar() {
            Ok(t) => t,
            Err(e @ (SimError::BusyboxNotFound { .. } | SimError::BusyboxDynamic { .. })) => {
                crate::testutil::cannot_run(&e.to_string());
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let list = entries(&tar_bytes);
        let find = |p: &str| list.iter().find(|(path, _, _)| path == p).cloned();
        let (_, kind, _) = find("bin/busybox").expect("bin/busybox");
        assert_eq!(kind, tar::EntryType::Regular);
        let (_, kind, link) = find("bin/sh").expect("bin/sh");
        assert_eq!(kind, tar::EntryType::Link);
        assert_eq!(link.as_deref(), Some("bin/busybox"));
        for dir in ["dev/", "proc/", "sys/", "etc/", "usr/bin/", "tmp/"] {
            assert!(find(dir).is_some(), "missing {dir}");
        }
        assert!(find("etc/passwd").is_some());
        // Nothing may sit where the spec mounts the simulated nvidia-smi.
        assert!(find("usr/bin/nvidia-smi").is_none());
        // Deterministic.
        assert_eq!(busybox_rootfs_tar().unwrap(), tar_bytes);
    }

    /// A minimal 64-bit little-endian ELF file with one program header of `p_type`
    /// (1: PT_LOAD, as in a static executable; 3: PT_INTERP, as in a dynamic one).
    fn elf64(p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little-endian
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[0x38..0x3A].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    /// Needs nothing from the machine: built ELF headers for both answers, and this
    /// test binary itself, which glibc targets link dynamically.
    #[test]
    fn elf_check_tells_static_from_dynamic() {
        assert_eq!(
            dynamic_reason(b"#!/bin/sh\n"),
            Some("not an ELF executable".into())
        );
        assert_eq!(dynamic_reason(&elf64(1)), None);
        assert_eq!(
            dynamic_reason(&elf64(3)),
            Some("it has an ELF interpreter (PT_INTERP)".into())
        );
        assert_eq!(
            dynamic_reason(&elf64(1)[..66]),
            Some("truncated program headers".into())
        );
        if cfg!(target_env = "gnu") {
            let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
            assert!(dynamic_reason(&exe).is_some_and(|r| r.contains("PT_INTERP")));
        }
    }

    #[test]
    fn dynamic_busybox_error_names_the_package() {
        let e = SimError::BusyboxDynamic {
            path: "/bin/busybox".into(),
            detail: "it has an ELF interpreter (PT_INTERP)".into(),
        };
        assert!(e.to_string().contains("busybox-static"));
    }

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(
            split_reference("cdi-harness/busybox:sim"),
            ("cdi-harness/busybox", "sim")
        );
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("reg:5000/x/y"), ("reg:5000/x/y", "latest"));
        assert_eq!(split_reference("reg:5000/x/y:t"), ("reg:5000/x/y", "t"));
    }
}
