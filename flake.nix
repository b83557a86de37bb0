{
  description = "cdi-harness: proves that NixOS machines give Docker containers their NVIDIA GPUs through CDI";

  # nixos-25.11: hardware.nvidia-container-toolkit (with suppressNvidiaDriverAssertion
  # and the rootless engine's CDI settings), Docker 28. `nix flake update` moves the pin.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      # The harness builds and runs on both; the VM tests are x86_64-linux.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      vmSystems = [ "x86_64-linux" ];
      forSystems = ss: f: lib.genAttrs ss (system: f system nixpkgs.legacyPackages.${system});

      cargoToml = lib.importTOML ./harness/Cargo.toml;

      harnessFor =
        pkgs:
        pkgs.rustPlatform.buildRustPackage {
          pname = "cdi-harness";
          inherit (cargoToml.package) version;

          # What the crate and its unit tests read (include_str! of
          # scripts/seed-checklist.sh and of the NixOS evaluator's Nix files under
          # nixos-tests/, fixtures, insta snapshots, .cargo/config.toml's
          # INSTA_WORKSPACE_ROOT).
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./Cargo.toml
              ./Cargo.lock
              ./.cargo
              ./harness
              ./nixos-tests
              ./scenarios
              ./scripts
              ./snapshots
            ];
          };
          cargoLock.lockFile = ./Cargo.lock;

          cargoBuildFlags = [
            "--package"
            "cdi-harness"
          ];
          # Only the unit tests run in the build sandbox. The integration tests
          # (harness/tests/: scenarios, sim_engine, reliability, cli) start private
          # Docker engines and need root, a rootless user and a static busybox; the VM
          # tests (checks.vm-*) run the harness against a real NixOS machine instead.
          cargoTestFlags = [
            "--package"
            "cdi-harness"
            "--lib"
          ];
          # The simulated-GPU unit tests run a static busybox (found on PATH) and fail
          # without one; the sandbox has no rootless user with subordinate ids, so the
          # one test that needs those says `skipped:` instead of failing the build
          # (CI on Debian runs it for real).
          nativeCheckInputs = [ pkgs.pkgsStatic.busybox ];
          env.CDI_HARNESS_ALLOW_SKIP = "1";

          meta = {
            description = "Proves that a machine gives Docker containers its NVIDIA GPUs through CDI, the way NixOS does it";
            license = with lib.licenses; [
              mit
              asl20
            ];
            mainProgram = "cdi-harness";
            platforms = lib.platforms.linux;
          };
        };

      vmTestsFor =
        system: pkgs:
        import ./nixos-tests {
          inherit pkgs;
          harness = self.packages.${system}.default;
        };
    in
    {
      packages = forSystems systems (
        system: pkgs: rec {
          cdi-harness = harnessFor pkgs;
          default = cdi-harness;
        }
      );

      # `nix run` is `cdi-harness run`, `nix run .#doctor` is `cdi-harness doctor`
      # (arguments follow `--`).
      apps = forSystems systems (
        system: pkgs:
        let
          subcommand = name: description: {
            type = "app";
            program = "${pkgs.writeShellScript "cdi-harness-${name}" ''
              exec ${lib.getExe self.packages.${system}.default} ${name} "$@"
            ''}";
            meta.description = description;
          };
        in
        {
          default = subcommand "run" "cdi-harness run: the scenarios' checks against the machine's Docker engine (or the sim backend)";
          doctor = subcommand "doctor" "cdi-harness doctor: the write-up's troubleshooting steps on this machine, each with its fix";
        }
      );

      # pkgs.cdi-harness, e.g. for the nightly module's default package.
      overlays.default = final: prev: { cdi-harness = harnessFor final; };

      # services.cdi-harness.nightly (nixos-tests/nightly-module.nix).
      nixosModules.default = ./nixos-tests/nightly-module.nix;

      # Every scenario is a VM test: vm-<name> with simulated GPUs, on any builder with
      # KVM. GPU-passthrough runs need a prepared builder and are not checks (see
      # legacyPackages.<system>.gpuTests), so `nix flake check` runs everywhere.
      checks = forSystems systems (
        system: pkgs:
        let
          harness = self.packages.${system}.default;
          names = map (lib.removeSuffix ".toml") (
            builtins.attrNames (
              lib.filterAttrs (n: t: t == "regular" && lib.hasSuffix ".toml" n) (builtins.readDir ./scenarios)
            )
          );
        in
        {
          cdi-harness = harness;

          # What .ci/nix-check proves without nixpkgs, proved again here: Nix
          # (nixos-tests/lib/scenario.nix) reads every scenario as the harness does.
          scenario-export =
            pkgs.runCommand "cdi-harness-scenario-export"
              {
                nativeBuildInputs = [
                  harness
                  pkgs.python3
                ];
              }
              ''
                ${lib.concatMapStrings (name: ''
                  cdi-harness scenario export ${./scenarios}/${name}.toml > harness.json
                  python3 ${./nixos-tests/compare-json.py} ${name} nix ${
                    pkgs.writeText "${name}.json" (
                      builtins.toJSON (import ./nixos-tests/lib/scenario.nix (./scenarios + "/${name}.toml"))
                    )
                  } cdi-harness harness.json
                  echo "ok ${name}"
                '') names}
                touch $out
              '';
        }
        // lib.optionalAttrs (builtins.elem system vmSystems) (vmTestsFor system pkgs).simulated
      );

      # GPU passthrough: vm-<name>-passthrough for each scenario with gpus.pci, and
      # mkGpuTest for any scenario with the host's addresses:
      #   nix build --impure --expr '(builtins.getFlake (toString ./.)).legacyPackages.x86_64-linux.mkGpuTest
      #     { scenarioFile = ./scenarios/seed.toml; pci = [ "0000:01:00.0" ]; }' -L
      legacyPackages = forSystems vmSystems (
        system: pkgs:
        let
          tests = vmTestsFor system pkgs;
        in
        {
          gpuTests = tests.passthrough;
          mkGpuTest = args: tests.mkTest (args // { flavour = "passthrough"; });
        }
      );

      devShells = forSystems systems (
        system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              pkgs.cargo
              pkgs.rustc
              pkgs.clippy
              pkgs.rustfmt
              pkgs.rust-analyzer
              # The sim backend: a CDI-capable engine (dockerd >= 25), a static busybox
              # for its image, and what its rootless engine runs on.
              pkgs.docker
              pkgs.pkgsStatic.busybox
              pkgs.rootlesskit
              pkgs.slirp4netns
              pkgs.nixfmt
            ];
          };
        }
      );

      # nixfmt is the RFC 166 style formatter (nixfmt-rfc-style before nixos-25.11).
      formatter = forSystems systems (system: pkgs: pkgs.nixfmt);
    };
}
