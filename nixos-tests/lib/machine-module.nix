# A scenario's `[machine]` table as NixOS modules: the table itself, and its
# `[machine.force]` table with every value applied with `lib.mkForce`, so that it wins
# over what NixOS's own modules define for the same option (for example the toolkit
# module's `features.cdi = true` at normal priority, which a plain `false` would
# conflict with). Each forced value is a leaf of `[machine.force]`: a table there only
# spells the option path, so forcing `...settings.features.cdi` leaves the other
# `features` keys to merge as usual.
#
# Both modules carry the scenario file's name, so nixpkgs names it in errors.
# Builtins only; the harness reads the same table (scenario.rs `machine_facts`: a
# forced value is the effective one).
scenarioFile:
let
  raw = (fromTOML (builtins.readFile scenarioFile)).machine or { };
  file = toString scenarioFile;
  forced = raw.force or { };
in
[
  {
    _file = file;
    config = builtins.removeAttrs raw [ "force" ];
  }
  (
    { lib, ... }:
    {
      _file = file;
      config =
        let
          leaves = v: if builtins.isAttrs v then builtins.mapAttrs (_: leaves) v else lib.mkForce v;
        in
        leaves forced;
    }
  )
]
