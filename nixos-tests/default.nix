# Every scenario in scenarios/ as NixOS VM tests.
#   simulated   : vm-<name> for every scenario (no GPU needed; the flake's checks)
#   passthrough : vm-<name>-passthrough for scenarios whose gpus.pci is set
#   mkTest      : make-test.nix's function, e.g. for a passthrough run of any
#                 scenario with the host's PCI addresses given at the command line
{
  pkgs,
  harness,
  scenarios ? ../scenarios,
}:
let
  inherit (pkgs) lib;
  mkTest = import ./make-test.nix { inherit pkgs harness; };
  files = lib.filterAttrs (n: type: type == "regular" && lib.hasSuffix ".toml" n) (
    builtins.readDir scenarios
  );
  fileOf = name: scenarios + "/${name}.toml";
  # Only scenarios whose applies-to lists "vm" get a VM test.
  names = builtins.filter (name: builtins.elem "vm" (import ./lib/scenario.nix (fileOf name)).appliesTo) (
    map (lib.removeSuffix ".toml") (builtins.attrNames files)
  );
  withPci = builtins.filter (name: (import ./lib/scenario.nix (fileOf name)).gpus.pci != [ ]) names;
in
{
  inherit mkTest;
  simulated = lib.listToAttrs (
    map (name: {
      name = "vm-${name}";
      value = mkTest { scenarioFile = fileOf name; };
    }) names
  );
  passthrough = lib.listToAttrs (
    map (name: {
      name = "vm-${name}-passthrough";
      value = mkTest {
        scenarioFile = fileOf name;
        flavour = "passthrough";
      };
    }) withPci
  );
}
