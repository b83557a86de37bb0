//! `nvidia-smi -L` as the containers print it: what the device checks and the GPU
//! cross-checks compare. Its own module so that neither depends on the other for it.

/// One GPU as `nvidia-smi -L` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedGpu {
    /// The index nvidia-smi gives it (counted from 0 among the visible GPUs).
    pub index: u32,
    /// Model name.
    pub name: String,
    /// `GPU-…` UUID.
    pub uuid: String,
}

/// Parses `nvidia-smi -L` output: `GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)`. MIG lines
/// (`  MIG 1g.10gb Device 0: (UUID: MIG-…)`) belong to the GPU above them and are not GPUs.
pub fn parse_nvidia_smi_list(text: &str) -> Vec<ListedGpu> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("GPU ") else {
            continue;
        };
        let Some((idx, rest)) = rest.split_once(':') else {
            continue;
        };
        let Ok(index) = idx.trim().parse() else {
            continue;
        };
        let Some((name, uuid)) = rest.rsplit_once("(UUID:") else {
            continue;
        };
        out.push(ListedGpu {
            index,
            name: name.trim().to_string(),
            uuid: uuid.trim().trim_end_matches(')').trim().to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_nvidia_smi_list_with_mig() {
        let text = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5c1d8a3e-2f7a-4b0e-9c1d-0a1b2c3d4e5f)\n  MIG 1g.5gb      Device  0: (UUID: MIG-0e3b9c1a-aaaa-bbbb-cccc-123456789abc)\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-6d2e9b4f-3a8b-4c1f-8d2e-1b2c3d4e5f60)\n";
        let g = parse_nvidia_smi_list(text);
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].index, 1);
        assert_eq!(g[1].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(g[0].uuid, "GPU-5c1d8a3e-2f7a-4b0e-9c1d-0a1b2c3d4e5f");
    }
}
