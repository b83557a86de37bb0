# `cdi-harness scenario nixos-eval`: one NixOS configuration evaluated through nixpkgs'
# module system, summarised as JSON. Run by the harness as
#
#   nix-instantiate --eval --strict --json nixos-tests/eval/evaluate.nix \
#     --arg kit /path/to/nixpkgs-eval   (or --arg nixpkgs /path/to/nixpkgs) \
#     --argstr target scenario --argstr file scenarios/seed.toml --argstr flavour simulated
#
# kit      : the evaluation kit (nixpkgs' lib and its Docker and toolkit modules; the
#            rest of NixOS stood in by ./nixos-stubs.nix), or
# nixpkgs  : a nixpkgs checkout, evaluated with its own nixos/lib/eval-config.nix.
# target   : "scenario" — `file` is a scenario; its machine as `flavour` builds it:
#              "machine"     its `[machine]` table alone,
#              "simulated"   the VM test with simulated GPUs (../node.nix),
#              "passthrough" the VM test with GPUs passed through (../node.nix);
#            "module"   — `file` is a NixOS module (one's own machine configuration);
#            "nightly"  — ../nightly-module.nix enabled, `variant` "defaults" (only the
#                         required `flake`) or "full" (every option set).
#
# nixpkgs' errors (an option that does not exist, a wrong type, conflicting
# definitions) abort the evaluation with nixpkgs' own message, naming the file that
# defined the value. Failed assertions and warnings are reported, not thrown.
{
  kit ? null,
  nixpkgs ? null,
  target,
  file ? null,
  flavour ? "simulated",
  variant ? "defaults",
}:
let
  backend =
    if kit != null && nixpkgs == null then
      let
        k = import ./kit.nix kit;
      in
      {
        inherit (k) lib pkgs;
        eval = k.eval;
        vmModules = [ ];
        source = "kit";
      }
    else if nixpkgs != null && kit == null then
      let
        pkgs = import nixpkgs {
          system = "x86_64-linux";
          config = { };
          overlays = [ ];
        };
      in
      {
        inherit pkgs;
        inherit (pkgs) lib;
        eval =
          modules:
          import (nixpkgs + "/nixos/lib/eval-config.nix") {
            system = "x86_64-linux";
            inherit modules;
          };
        vmModules = [ (nixpkgs + "/nixos/modules/virtualisation/qemu-vm.nix") ];
        source = "nixpkgs";
      }
    else
      throw "cdi-harness nixos-eval: give exactly one of `kit` and `nixpkgs`";

  inherit (backend) lib pkgs;

  # The harness in the VM and the nightly module's package: never built here.
  harness = pkgs.cdi-harness or (pkgs.writeShellScriptBin "cdi-harness" "exit 0");

  # With a full nixpkgs a scenario's machine is a QEMU VM in every flavour (as the VM
  # tests make it; nixos/lib/testing imports qemu-vm.nix), so that NixOS's own
  # assertions about file systems and boot loaders hold.
  scenarioModules =
    if flavour == "machine" then
      backend.vmModules ++ import ../lib/machine-module.nix file
    else
      let
        scenario = import ../lib/scenario.nix file;
        # A passthrough VM needs one PCI address per GPU; any will do to evaluate it.
        pci =
          if scenario.gpus.pci != [ ] then
            scenario.gpus.pci
          else
            builtins.genList (i: "0000:${lib.fixedWidthString 2 "0" (lib.toHexString (i + 1))}:00.0") scenario.gpus.count;
      in
      backend.vmModules
      ++
        (import ../node.nix { inherit pkgs harness; } {
          scenarioFile = file;
          inherit flavour;
          pci = if flavour == "passthrough" then pci else null;
        }).modules;

  nightlyModules = [
    ../nightly-module.nix
    # The flake's overlay provides pkgs.cdi-harness, the module's default package.
    (lib.optionalAttrs (backend.source == "nixpkgs") {
      nixpkgs.overlays = [ (final: prev: { cdi-harness = prev.cdi-harness or harness; }) ];
    })
    (
      {
        defaults = {
          services.cdi-harness.nightly = {
            enable = true;
            flake = "/etc/nixos";
          };
        };
        full = {
          # Every option, with values that need escaping in a unit file: `%`, `$`,
          # quotes and spaces.
          services.cdi-harness.nightly = {
            enable = true;
            package = harness;
            flake = "/srv/flakes/gpu host";
            stateDir = "/srv/cdi-harness";
            schedule = "*-*-* 03:00:00";
            backend = "sim";
            scenarios = [
              "/srv/scenarios/100%.toml"
              "/srv/scenarios"
            ];
            keep = 7;
            allowSkips = true;
            notifyCommand = "mail -s \"cdi-harness: $CDI_HARNESS_VERDICT\" root < \"$CDI_HARNESS_SUMMARY\"";
            extraArgs = [
              "--no-build"
              "--html=/srv/cdi-harness/night ${"$"}{HOSTNAME} %H.html"
            ];
          };
          virtualisation.docker.enable = true;
        };
      }
      .${variant} or (throw "cdi-harness nixos-eval: nightly variant must be \"defaults\" or \"full\", not ${builtins.toJSON variant}")
    )
  ];

  modules =
    if target == "scenario" then
      scenarioModules
    else if target == "module" then
      [ file ]
    else if target == "nightly" then
      nightlyModules
    else
      throw "cdi-harness nixos-eval: target must be \"scenario\", \"module\" or \"nightly\", not ${builtins.toJSON target}";

  configuration = backend.eval modules;
  inherit (configuration) config;

  # Every option value, forced (so that every definition is type-checked and merged, as
  # building the system would), stopping at derivations (never built or instantiated
  # here). Options are walked rather than `config`, so that renamed (hidden) options
  # are not read and do not print their deprecation traces a second time. With a full
  # nixpkgs, only the options this evaluation is about.
  force =
    v:
    if lib.isDerivation v then
      true
    else if builtins.isAttrs v then
      builtins.all force (builtins.attrValues v)
    else if builtins.isList v then
      builtins.all force v
    else
      builtins.seq v true;
  options = lib.collect lib.isOption (builtins.removeAttrs configuration.options [ "_module" ]);
  relevant =
    opt:
    builtins.any (p: lib.hasPrefix p (lib.showOption opt.loc)) [
      "virtualisation.docker"
      "hardware.nvidia-container-toolkit"
      "users.groups"
      "services.cdi-harness"
    ];
  forceOption = opt: (opt.visible or true) == false || !(opt.isDefined or true) || force opt.value;
  # The units this evaluation reports on (all of systemd.services would be every unit
  # of a full NixOS).
  units = [
    "docker"
    "docker-prune"
    generatorName
    "cdi-harness-nightly"
    "cdi-harness-stale-spec"
  ];
  forced =
    if backend.source == "kit" then
      builtins.all forceOption options
    else
      builtins.all forceOption (builtins.filter relevant options)
      && force (lib.filterAttrs (n: _: builtins.elem n units) config.systemd.services)
      && force (lib.filterAttrs (n: _: builtins.elem n units) config.systemd.timers);

  generatorName = "nvidia-container-toolkit-cdi-generator";
  services = config.systemd.services;
  generator = services.${generatorName} or null;
  unitFields =
    unit: fields: lib.filterAttrs (_: v: v != null) (lib.genAttrs fields (f: unit.serviceConfig.${f} or null));

  summary = {
    source = backend.source;
    docker = {
      enable = config.virtualisation.docker.enable;
      settings = config.virtualisation.docker.daemon.settings;
    };
    rootless = {
      enable = config.virtualisation.docker.rootless.enable;
      setSocketVariable = config.virtualisation.docker.rootless.setSocketVariable;
      settings = config.virtualisation.docker.rootless.daemon.settings;
    };
    generator =
      if generator == null || !generator.enable then
        {
          exists = false;
          requiredBy = [ ];
          wantedBy = [ ];
          requiredFrom = [ ];
        }
      else
        {
          exists = true;
          inherit (generator) requiredBy wantedBy;
          # Units whose own `requires` name it.
          requiredFrom = builtins.filter (n: builtins.elem "${generatorName}.service" services.${n}.requires) (
            builtins.attrNames services
          );
        };
    dockerGroupMembers = config.users.groups.docker.members or [ ];
    failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
    warnings = config.warnings;
    nightly =
      if services ? cdi-harness-nightly then
        {
          service = unitFields services.cdi-harness-nightly [
            "ExecStart"
            "StateDirectory"
            "SuccessExitStatus"
            "Type"
          ]
          // {
            environment = services.cdi-harness-nightly.environment;
          };
          tmpfiles = config.systemd.tmpfiles.rules;
          timer = config.systemd.timers.cdi-harness-nightly.timerConfig or { };
        }
      else
        null;
  };
in
builtins.seq forced summary
