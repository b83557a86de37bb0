# One scenario file -> one NixOS VM test (pkgs.testers.runNixOSTest).
#
# The VM's configuration (node.nix, the same modules `cdi-harness scenario nixos-eval`
# evaluates) is the scenario's `[machine]` table imported as NixOS modules (its
# `[machine.force]` values with lib.mkForce; lib/scenario.nix reads it exactly as the
# harness does), plus what the test
# needs: the users the scenario names, the harness, a tiny busybox image (no network in
# the sandbox; CDI mounts `nvidia-smi` into it) and the scenario's broken state. The
# test script waits for the CDI generator and Docker, runs
#
#   cdi-harness run --backend host --scenario /etc/cdi-harness/<name>.toml --image …
#
# inside the VM (as the scenario's user with its rootless socket when rootless is the
# default), copies the JSON, JUnit and Markdown reports to the test's output, and
# fails unless the harness's verdict is the scenario's: every check passes, or, for a
# scenario of a broken machine, exactly its `[[expect.fail]]` checks fail, with the
# declared texts.
#
# flavour "simulated": no GPU; the toolkit's `nvidia-ctk` prints the sim backend's spec
#   (modules/simulated-gpus.nix). Runs on any x86_64-linux builder with KVM.
# flavour "passthrough": the host GPUs at `pci` (default: the scenario's gpus.pci) are
#   passed to the VM with VFIO and the real driver and toolkit run
#   (modules/gpu-passthrough.nix); the test requires the `gpu-passthrough` feature.
{
  pkgs,
  harness,
  # Where snapshots/sim/<name>.snap live (the repository's snapshots/).
  simSnapshots ? ../snapshots,
  # Stored host snapshots of passthrough runs (nixos-tests/snapshots/host/<name>.snap).
  passthroughSnapshots ? ./snapshots,
}:
{
  scenarioFile,
  flavour ? "simulated",
  pci ? null,
}:
let
  inherit (pkgs) lib;

  # The VM's configuration (node.nix): the same modules `cdi-harness scenario
  # nixos-eval` evaluates.
  vm = import ./node.nix { inherit pkgs harness simSnapshots passthroughSnapshots; } {
    inherit scenarioFile flavour pci;
  };
  inherit (vm)
    name
    setup
    passthrough
    specFileName
    runUser
    runUid
    snapshot
    ;
  inherit (vm.scenario) facts;

  # A tiny image: busybox and the directories runc and CDI mount onto (as the sim
  # backend's image). The spec mounts nvidia-smi, so nothing else is needed.
  image = pkgs.dockerTools.buildImage {
    name = "cdi-harness/busybox";
    tag = "vm";
    copyToRoot = pkgs.buildEnv {
      name = "cdi-harness-image-root";
      paths = [ pkgs.busybox ];
      pathsToLink = [ "/bin" ];
    };
    extraCommands = ''
      mkdir -p dev etc proc root run sbin sys tmp usr/bin usr/sbin var/tmp
      chmod 1777 tmp var/tmp
    '';
    config.Env = [ "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ];
  };

  testData = pkgs.writeText "cdi-harness-vm-test-${name}.json" (
    builtins.toJSON {
      inherit name runUser runUid;
      flavour = if passthrough then "passthrough" else "simulated";
      scenarioPath = "/etc/cdi-harness/${name}.toml";
      specFile = specFileName;
      snapshotsPath = if snapshot == null then null else "/etc/cdi-harness/snapshots";
      imageTar = "${image}";
      imageRef = "cdi-harness/busybox:vm";
      rootlessDefault = facts.rootlessDefault;
      generatorFails = setup.simSpec == "missing";
      staleSpec = setup.staleSpec;
      expectedFailures = setup.expectedFailures;
    }
  );

  test = pkgs.testers.runNixOSTest {
    name = "cdi-harness-${name}${lib.optionalString passthrough "-passthrough"}";
    # The passthrough VM sets nixpkgs.config.allowUnfree (the NVIDIA driver).
    node.pkgsReadOnly = !passthrough;
    nodes.machine.imports = vm.modules;
    testScript = ''
      data_file = "${testData}"
    ''
    + builtins.readFile ./test_script.py;
  };
in
if passthrough then
  test.overrideTestDerivation (old: {
    requiredSystemFeatures = (old.requiredSystemFeatures or [ ]) ++ [ "gpu-passthrough" ];
  })
else
  test
