//! What an engine's error means and what to do about it: each error text users meet
//! with CDI is classified once into a [`Cause`], and the fix follows from the cause.
//! Checks, the GPU cross-checks and `doctor` all take their fixes from here, so one
//! error never gets two different pieces of advice.

use crate::outcome::Cause;

/// The fix the seed write-up gives when the spec is missing.
pub const SPEC_MISSING_FIX: &str = "sudo systemctl restart nvidia-container-toolkit-cdi-generator && sudo systemctl restart docker (check `systemctl status nvidia-container-toolkit-cdi-generator` for why it did not write the spec)";

/// The fix for a `--restart always` CDI container that does not come back.
pub const RESTART_FIX: &str = "moby#49989 / nixpkgs#353059: upgrade Docker (on NixOS: update nixpkgs so virtualisation.docker.package has the fix); workaround until then: `sudo systemctl restart` the container's unit (e.g. docker-<name>.service of virtualisation.oci-containers) after docker is up, or `docker start <container>`";

/// The cause of an engine (or runtime) error message, when it is one the harness knows.
/// Order matters: the more specific texts are tried first (`device driver "cdi"` before
/// `device driver ""`, a missing device node before a missing mount).
pub fn classify(message: &str) -> Option<Cause> {
    let m = message;
    let cause = if m.contains("unresolvable CDI devices") {
        Cause::DeviceUnresolvable
    } else if m.contains(r#"could not select device driver "cdi""#) {
        Cause::CdiDisabled
    } else if m.contains(r#"could not select device driver """#) {
        Cause::NoGpuDriver
    } else if m.contains("error running hook")
        || m.contains("error executing hook")
        || m.contains("nvidia-cdi-hook")
    {
        Cause::HookFailed
    } else if m.contains("failed to stat CDI host device")
        || m.contains("error creating device nodes")
    {
        Cause::DeviceNodeMissing
    } else if m.contains("error mounting") && m.contains("no such file or directory") {
        Cause::MountMissing
    } else if m.contains("executable file not found") && m.contains("nvidia") {
        Cause::ManualRuntime
    } else if m.contains("No such image") || m.contains("not found: manifest unknown") {
        Cause::ImageMissing
    } else {
        return None;
    };
    Some(cause)
}

/// The fix for an engine error of this cause, as the write-up and the known
/// regressions give it; `None` where the cause alone does not say what to do.
pub fn fix_for(cause: Cause) -> Option<&'static str> {
    Some(match cause {
        Cause::DeviceUnresolvable => {
            "the engine does not know this device: check `docker info` (Discovered Devices and warnings); a stale second spec or a missing spec causes this — sudo systemctl restart nvidia-container-toolkit-cdi-generator"
        }
        Cause::CdiDisabled => {
            "CDI is off in the engine: features.cdi must be true (hardware.nvidia-container-toolkit.enable sets it for docker >= 25); then sudo systemctl restart docker"
        }
        Cause::NoGpuDriver => {
            "`--gpus` needs the legacy NVIDIA runtime hook, which NixOS's CDI setup does not install: use --device nvidia.com/gpu=all"
        }
        // nixpkgs#411150. runc: `error running hook #0: error running hook: exit status 1,
        // stdout: , stderr: …`; crun and nvidia-container-runtime name the hook's path.
        Cause::HookFailed => {
            "a CDI hook (nvidia-cdi-hook, from the spec's containerEdits.hooks) failed at container start: the spec no longer matches the driver or the toolkit (nixpkgs#411150) — regenerate it: sudo systemctl restart nvidia-container-toolkit-cdi-generator; if it persists, update nixpkgs (nvidia-container-toolkit) and check `journalctl -u nvidia-container-toolkit-cdi-generator`"
        }
        // nixpkgs#319201: runc `error mounting "<hostPath>" to rootfs at "<path>": stat
        // <hostPath>: no such file or directory` — a driver file of the old driver.
        Cause::MountMissing => {
            "a mount in the CDI spec names a host file that is gone: the spec was generated for a driver that is no longer installed (nixpkgs#319201) — regenerate it: sudo systemctl restart nvidia-container-toolkit-cdi-generator (a reboot after a driver update does the same)"
        }
        Cause::DeviceNodeMissing => {
            "the spec names a device node that does not exist on the host: the spec is stale (driver changed or GPU gone) — sudo systemctl restart nvidia-container-toolkit-cdi-generator"
        }
        Cause::ManualRuntime => {
            "a manual NVIDIA runtime points at a binary that is gone (typical after `nix flake update`): remove daemon.settings.runtimes and use --device nvidia.com/gpu=all"
        }
        Cause::ImageMissing => {
            "load the image first: docker pull IMAGE, or docker load -i IMAGE.tar on an offline machine"
        }
        Cause::SpecMissing => SPEC_MISSING_FIX,
        Cause::RestartRegression => RESTART_FIX,
        _ => return None,
    })
}

/// A fix hint for an engine error text users meet with CDI.
pub fn hint_for(message: &str) -> Option<String> {
    classify(message).and_then(fix_for).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    /// The engine's answers for the known regressions, verbatim (engine 28.5.2 with
    /// containerd 2.1.9 and runc, measured by hand against a private engine).
    const CDI_OFF_ERROR: &str = r#"could not select device driver "cdi" with capabilities: []"#;
    const STALE_MOUNT_ERROR: &str = r#"failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error mounting "/nix/store/00000000000000000000000000000000-nvidia-x11-570.00/lib/libcuda.so.1" to rootfs at "/usr/lib/libcuda.so.1": stat /nix/store/00000000000000000000000000000000-nvidia-x11-570.00/lib/libcuda.so.1: no such file or directory"#;
    const FAILING_HOOK_ERROR: &str = "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: error running create-symlinks hook: failed to create link [libcuda.so.1 /usr/lib/libcuda.so]: no such file or directory (simulated by cdi-harness)";

    #[rstest]
    #[case::cdi_off_305312(CDI_OFF_ERROR, Cause::CdiDisabled, &["features.cdi", "hardware.nvidia-container-toolkit.enable", "sudo systemctl restart docker"])]
    #[case::stale_mount_319201(STALE_MOUNT_ERROR, Cause::MountMissing, &["nixpkgs#319201", "sudo systemctl restart nvidia-container-toolkit-cdi-generator"])]
    #[case::failing_hook_411150(FAILING_HOOK_ERROR, Cause::HookFailed, &["nixpkgs#411150", "nvidia-cdi-hook", "sudo systemctl restart nvidia-container-toolkit-cdi-generator"])]
    #[case::hook_by_path("error executing hook `/nix/store/x-nvidia-container-toolkit-1.17.6-tools/bin/nvidia-cdi-hook` (exit code: 1)", Cause::HookFailed, &["nixpkgs#411150"])]
    #[case::gpus_flag(r#"could not select device driver "" with capabilities: [[gpu]]"#, Cause::NoGpuDriver, &["--device nvidia.com/gpu=all"])]
    fn known_regressions_get_their_cause_and_fix(
        #[case] error: &str,
        #[case] cause: Cause,
        #[case] wanted: &[&str],
    ) {
        assert_eq!(classify(error), Some(cause));
        let hint = hint_for(error).unwrap_or_default();
        for w in wanted {
            assert!(hint.contains(w), "hint for {error:?} lacks {w:?}: {hint:?}");
        }
    }

    #[test]
    fn a_missing_device_node_is_not_taken_for_a_missing_mount() {
        let text = r#"CDI device injection failed: failed to inject devices: failed to stat CDI host device "/dev/nvidiactl": no such file or directory"#;
        assert_eq!(classify(text), Some(Cause::DeviceNodeMissing));
        let hint = hint_for(text).unwrap_or_default();
        assert!(hint.contains("device node"), "{hint}");
        assert!(!hint.contains("nixpkgs#319201"), "{hint}");
    }

    #[test]
    fn unknown_errors_have_no_cause() {
        assert_eq!(
            classify("exec: \"sh\": executable file not found in $PATH"),
            None
        );
        assert_eq!(hint_for("something else"), None);
    }
}
