# The NixOS configuration of one scenario's VM test, as modules: the scenario's
# `[machine]` (lib/machine-module.nix: its `[machine.force]` values with mkForce),
# what every scenario VM gets (modules/scenario-machine.nix) and the flavour's GPUs
# (modules/simulated-gpus.nix or modules/gpu-passthrough.nix). make-test.nix boots it;
# eval/evaluate.nix evaluates the very same modules through nixpkgs' module system
# (`cdi-harness scenario nixos-eval`), so what CI evaluates is what the VM runs.
#
# Needs from `pkgs` only what the modules' arguments are built with (runCommand,
# writeText); nothing is built until a VM test is.
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
in
{
  inherit
    name
    scenario
    setup
    passthrough
    specFileName
    runUser
    runUid
    snapshot
    ;
  modules = import ./lib/machine-module.nix scenarioFile ++ [
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
}
