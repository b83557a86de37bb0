# What every scenario VM gets besides the scenario's own `[machine]` module: the
# users the scenario names, the harness, the scenario file, the test image, the
# stored snapshot, and the broken state the scenario describes (`[sim]`: a generator
# that fails before writing the spec, or a stale second spec beside the generated
# one). Both flavours (simulated GPUs, GPU passthrough) use it.
{
  scenario, # lib/scenario.nix of the file
  setup, # lib/setup.nix of the file
  scenarioFile,
  harness,
  users, # [ { name, uid } ]
  snapshot, # text of snapshots/host/<name>.snap for this VM, or null
  staleSpecFile, # a store file, or null
}:
{ lib, pkgs, ... }:
let
  generator = "nvidia-container-toolkit-cdi-generator";
in
{
  virtualisation.memorySize = lib.mkDefault 2048;
  virtualisation.diskSize = lib.mkDefault 4096;

  users.users = builtins.listToAttrs (
    map (u: {
      inherit (u) name;
      value = {
        isNormalUser = true;
        inherit (u) uid;
      };
    }) users
  );

  environment.systemPackages = [ harness ];
  environment.etc = {
    "cdi-harness/${scenario.name}.toml".source = scenarioFile;
  }
  // lib.optionalAttrs (snapshot != null) {
    "cdi-harness/snapshots/host/${scenario.name}.snap".text = snapshot;
  };

  # [sim] spec = "missing": the generator runs at boot and fails before it writes
  # /run/cdi/nvidia-container-toolkit.json (as when it starts before the driver is
  # loaded). Docker must not depend on it here, or it would not start at all.
  systemd.services.${generator} = lib.mkIf (setup.simSpec == "missing") {
    serviceConfig.ExecStart = lib.mkForce "${pkgs.writeShellScript "nvidia-cdi-generator-fails" ''
      echo "cdi-harness scenario ${scenario.name}: the CDI generator fails before writing the spec (simulated)" >&2
      exit 1
    ''}";
    requiredBy = lib.mkForce [ ];
  };

  # [sim] stale-spec: a hand-made second NVIDIA spec in the same directory as the
  # generated one (/run/cdi), written once the generator has run.
  systemd.services.cdi-harness-stale-spec = lib.mkIf (staleSpecFile != null) {
    description = "A stale hand-made NVIDIA CDI spec beside the generated one (cdi-harness scenario ${scenario.name})";
    wantedBy = [ "multi-user.target" ];
    requires = [ "${generator}.service" ];
    after = [ "${generator}.service" ];
    before = [ "docker.service" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
    script = ''
      install -D -m 0644 ${staleSpecFile} /run/cdi/${setup.staleSpec}
    '';
  };
}
