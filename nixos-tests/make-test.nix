# One scenario file -> one NixOS VM test (pkgs.testers.runNixOSTest).
#
# The VM's configuration is the scenario's `[machine]` table imported as a NixOS
# module (lib/scenario.nix reads it exactly as the harness does), plus what the test
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

  scenario = import ./lib/scenario.nix scenarioFile;
  setup = import ./lib/setup.nix scenarioFile;
  sim = import ./lib/sim.nix;
  inherit (scenario) name facts;

  passthrough =
    if flavour == "passthrough" then
      true
    else if flavour == "simulated" then
      false
    else
      throw "cdi-harness VM test ${name}: flavour must be \"simulated\" or \"passthrough\", not ${builtins.toJSON flavour}";

  pciAddresses = if pci == null then scenario.gpus.pci else pci;
  checkedPci =
    if !passthrough then
      [ ]
    else if pciAddresses == [ ] then
      throw "cdi-harness VM test ${name}: GPU passthrough needs PCI addresses (gpus.pci in the scenario, or the `pci` argument)"
    else if builtins.length pciAddresses != scenario.gpus.count then
      throw "cdi-harness VM test ${name}: ${toString (builtins.length pciAddresses)} PCI addresses for gpus.count = ${toString scenario.gpus.count}"
    else
      pciAddresses;

  specFileName =
    if setup.specFile == sim.specFileName then
      setup.specFile
    else
      throw "cdi-harness VM test ${name}: expect.spec-file = ${builtins.toJSON setup.specFile}, but NixOS's generator always writes ${sim.specFileName}";

  # The scenario's docker group members get accounts; the harness runs as the first
  # (the seed's `ryan`), over the rootful socket unless the rootless engine is the
  # default. A rootless default without members gets a user of its own.
  members = facts.dockerGroupMembers;
  runUser =
    if members != [ ] then
      builtins.head members
    else if facts.rootlessDefault then
      "cdih"
    else
      "root";
  userNames = lib.unique (members ++ lib.optional (runUser != "root") runUser);
  users = lib.imap0 (i: n: {
    name = n;
    uid = 1000 + i;
  }) userNames;
  runUid = if runUser == "root" then 0 else (lib.findFirst (u: u.name == runUser) null users).uid;

  # What the simulated nvidia-smi and its inventory are mounted from; the snapshots
  # name this store path (its hash redacted), hence sim.supportName.
  support = pkgs.runCommand sim.supportName {
    script = sim.nvidiaSmiScript;
    # [sim] fault = "failing-hook": the spec's createContainer hook (any scenario may
    # have it; only that spec runs it).
    failingHook = sim.failingHookScript;
    inventory = sim.inventory (
      sim.gpus {
        inherit (scenario.gpus) count;
        name = setup.gpuModel;
      }
    );
    passAsFile = [
      "script"
      "failingHook"
      "inventory"
    ];
  } ''
    mkdir -p $out
    install -m 0755 "$scriptPath" $out/${sim.nvidiaSmiFile}
    install -m 0644 "$inventoryPath" $out/${sim.inventoryFile}
    install -m 0755 "$failingHookPath" $out/${sim.failingHookFile}
  '';
  simArgs = {
    inherit (scenario.gpus) count;
    supportDir = "${support}";
    rootless = facts.rootlessDefault;
  };
  # The generated spec carries the scenario's `[sim] fault` (a known regression); the
  # stale second spec does not.
  specFile = pkgs.writeText specFileName (builtins.toJSON (sim.spec (simArgs // { inherit (setup) fault; })));
  staleSpecFile =
    if setup.staleSpec == null then null else pkgs.writeText setup.staleSpec (sim.toYAML (sim.staleSpec simArgs));

  # The stored snapshot of the normalized spec. Simulated: the sim backend's, with its
  # support directory where this VM has it. Passthrough: one recorded on real GPUs and
  # committed to nixos-tests/snapshots/host/ (none yet: the first run records it).
  simSnapshot = simSnapshots + "/sim/${name}.snap";
  passthroughSnapshot = passthroughSnapshots + "/host/${name}.snap";
  snapshot =
    if !passthrough then
      (
        if builtins.pathExists simSnapshot then sim.vmSnapshot (builtins.readFile simSnapshot) else null
      )
    else if builtins.pathExists passthroughSnapshot then
      builtins.readFile passthroughSnapshot
    else
      null;

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
    nodes.machine = {
      imports = [
        {
          _file = toString scenarioFile;
          config = scenario.machine;
        }
        (import ./modules/scenario-machine.nix {
          inherit
            scenario
            setup
            scenarioFile
            harness
            users
            snapshot
            staleSpecFile
            ;
        })
        (
          if passthrough then
            import ./modules/gpu-passthrough.nix { pci = checkedPci; }
          else
            import ./modules/simulated-gpus.nix { inherit scenario support specFile; }
        )
      ];
    };
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
