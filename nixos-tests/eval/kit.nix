# NixOS module evaluation through the evaluation kit (../shared/nixpkgs-eval on the
# project's CI machine; see its PROVENANCE.md): nixpkgs' own `lib.evalModules` over
# nixpkgs' own Docker, rootless Docker and NVIDIA container toolkit modules, imported
# from the kit's directory, plus this directory's stand-ins for the rest of NixOS
# (nixos-stubs.nix), `pkgs` (pkgs.nix) and `utils` (utils.nix).
#
# `kit -> modules -> configuration` (what `lib.evalModules` returns).
kit:
let
  lib = import ./polyfill.nix (import (kit + "/lib"));
  pkgs = import ./pkgs.nix { inherit lib kit; };
  utils = import ./utils.nix lib;
  nixosModules = kit + "/nixos/modules";
in
{
  inherit lib pkgs;
  eval =
    modules:
    lib.evalModules {
      class = "nixos";
      specialArgs = {
        inherit utils;
        modulesPath = toString nixosModules;
      };
      modules = [
        (nixosModules + "/virtualisation/docker.nix")
        (nixosModules + "/virtualisation/docker-rootless.nix")
        (nixosModules + "/services/hardware/nvidia-container-toolkit/default.nix")
        ./nixos-stubs.nix
        { _module.args.pkgs = pkgs; }
      ]
      ++ modules;
    };
}
