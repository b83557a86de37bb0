# The `pkgs` the evaluation kit's modules see: every attribute they (and this
# project's own modules) read, as stand-in derivations that evaluate but build nothing.
# A stand-in has a store-path-shaped `outPath` (so it interpolates into unit files), the
# outputs nixpkgs' packages have where the modules pick one (`tools`, `lib`, `bin`), a
# `version` where a module compares it, and `meta.mainProgram` for `lib.getExe`.
#
# Docker's version matters: the toolkit module turns `features.cdi` on only for
# docker >= 25. nixos-25.11's `pkgs.docker` is Docker 28.
{
  lib,
  kit, # the evaluation kit's directory (pkgs/pkgs-lib/formats.nix is taken from it)
}:
let
  # A derivation-shaped attribute set. The hash part is derived from the name, so a
  # path is stable between runs (it is never built, only printed).
  stand-in =
    name:
    {
      version ? "0",
      mainProgram ? name,
      outputs ? [ "out" ],
      extra ? { },
    }:
    let
      hash = builtins.substring 0 32 (builtins.hashString "sha256" "cdi-harness-eval-${name}");
      pathOf = output: "/nix/store/${hash}-${name}-${version}${lib.optionalString (output != "out") "-${output}"}";
      withOutput =
        output:
        self
        // {
          outPath = pathOf output;
          outputName = output;
        };
      self = {
        type = "derivation";
        inherit name version outputs;
        pname = name;
        outPath = pathOf "out";
        outputName = "out";
        drvPath = "/nix/store/${hash}-${name}-${version}.drv";
        meta = {
          inherit mainProgram;
          description = "stand-in for pkgs.${name} (cdi-harness NixOS evaluation kit)";
        };
        passthru = { };
      }
      // lib.genAttrs outputs withOutput
      // extra;
    in
    self;

  # `writeShellScript` and friends: the script's text is kept, so that an evaluation
  # still forces (and type-checks) whatever the text interpolates.
  script =
    name: text:
    stand-in name {
      extra = {
        inherit text;
      };
    };

  pkgs = {
    inherit lib;
    config = {
      allowAliases = false;
      allowUnfree = false;
    };

    stdenv = {
      hostPlatform = {
        isx86_64 = true;
        isLinux = true;
        system = "x86_64-linux";
      };
      isLinux = true;
    };
    system = "x86_64-linux";

    docker = stand-in "docker" { version = "28.5.1"; };
    nvidia-container-toolkit = stand-in "nvidia-container-toolkit" {
      version = "1.17.8";
      mainProgram = "nvidia-ctk";
      outputs = [
        "out"
        "tools"
      ];
    };
    libnvidia-container = stand-in "libnvidia-container" { version = "1.17.8"; };
    glibc = stand-in "glibc" {
      version = "2.40";
      outputs = [
        "out"
        "bin"
        "lib"
      ];
    };
    systemd = stand-in "systemd" { version = "258"; };
    procps = stand-in "procps" { };
    kmod = stand-in "kmod" { };
    jq = stand-in "jq" { };
    git = stand-in "git" { };
    coreutils = stand-in "coreutils" { };
    bash = stand-in "bash" { };
    busybox = stand-in "busybox" { };
    zfs = stand-in "zfs" { };
    nix = stand-in "nix" { version = "2.28.4"; };
    cdi-harness = stand-in "cdi-harness" { };

    runtimeShell = "${pkgs.bash}/bin/bash";
    addDriverRunpath.driverLink = "/run/opengl-driver";

    linuxPackages = {
      nvidiaPackages.stable = stand-in "nvidia-x11" {
        version = "580.95.05";
        mainProgram = "nvidia-smi";
        outputs = [
          "out"
          "bin"
          "lib"
        ];
      };
    };

    writeScriptBin = name: text: script name text;
    writeShellScriptBin = name: text: script name text;
    writeShellScript = name: text: script name text;
    writeScript = name: text: script name text;
    writeText = name: text: script name text;
    runCommand = name: env: buildCommand: script name buildCommand;
    buildEnv = args: stand-in args.name { };
    dockerTools.buildImage = args: stand-in "docker-image-${args.name}.tar.gz" { };

    callPackage = lib.callPackageWith pkgs;
    formats = import (kit + "/pkgs/pkgs-lib/formats.nix") { inherit lib pkgs; };
  };
in
pkgs
