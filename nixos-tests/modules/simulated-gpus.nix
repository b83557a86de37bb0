# No GPU: the NVIDIA container toolkit module runs as on a GPU machine, but its
# `nvidia-ctk` is a stand-in (as in nixpkgs' nixos/tests/nvidia-container-toolkit.nix)
# whose `cdi generate` prints the spec the harness's `sim` backend writes for the
# scenario's GPUs: device nodes backed by /dev/null, and a simulated `nvidia-smi` that
# lists exactly the GPUs CDI injected into the container (lib/sim.nix). The
# generator's pipeline, the spec directory, Docker's CDI settings and the rootless
# engine's are NixOS's own.
{
  scenario,
  support, # the `cdi-harness-sim-support` derivation: nvidia-smi and gpus
  specFile, # the simulated spec (JSON)
}:
{ lib, pkgs, ... }:
let
  sim = import ../lib/sim.nix;
in
{
  hardware.nvidia-container-toolkit = {
    # There is no NixOS NVIDIA driver in this VM, by design.
    suppressNvidiaDriverAssertion = lib.mkForce true;
    package = lib.mkForce (
      pkgs.writeShellScriptBin "nvidia-ctk" ''
        # nvidia-ctk as simulated by cdi-harness: `cdi generate` prints a fixed spec.
        if [ "$1" = cdi ] && [ "$2" = generate ]; then
          exec cat ${specFile}
        fi
        echo "nvidia-ctk (simulated by cdi-harness): only 'cdi generate' is supported" >&2
        exit 1
      ''
    );
    # The driver files these would mount do not exist here: the spec is exactly the
    # sim backend's, so the sim backend's snapshots apply to it.
    mounts = lib.mkForce [ ];
  };

  # The generator script names the driver's library directory; without this it would
  # evaluate (and fetch) the unfree NVIDIA driver only to pass a path nobody reads.
  hardware.nvidia.package = lib.mkForce (
    pkgs.runCommand "nvidia-driver-absent" { } ''
      mkdir -p $out/lib
    ''
  );

  # A rootless engine cannot create device nodes: runc bind-mounts each node from the
  # host path equal to its container path, so the rootless spec has no hostPath and the
  # nodes must exist. They are copies of /dev/null (char 1:3), as in the sim backend.
  systemd.tmpfiles.rules = lib.mkIf scenario.facts.rootlessDefault (
    map (p: "c ${p} 0666 root root - 1:3") (sim.deviceNodePaths scenario.gpus.count)
  );

  environment.etc."cdi-harness/sim-support".source = support;
}
