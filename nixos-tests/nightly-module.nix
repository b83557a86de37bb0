# services.cdi-harness.nightly: runs `cdi-harness nightly` on a timer, so a machine notices
# when `nix flake update` breaks GPU containers before the update reaches it. The update
# is applied to the flake's lock only when no check regressed; otherwise the old lock is
# kept and the report in the state directory names the inputs that changed.
#
# The flake provides it as nixosModules.default; set `package` (e.g. to
# self.packages.${pkgs.system}.default) unless pkgs has `cdi-harness`.
{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.cdi-harness.nightly;
  # systemd's StateDirectory= is relative to /var/lib; a state directory elsewhere is
  # created by tmpfiles instead.
  inherit (cfg) stateDir;
  underVarLib = lib.hasPrefix "/var/lib/" stateDir;
in
{
  options.services.cdi-harness.nightly = {
    enable = lib.mkEnableOption "the nightly cdi-harness regression run after `nix flake update`";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.cdi-harness or (throw "services.cdi-harness.nightly.package must be set (pkgs has no cdi-harness)");
      defaultText = lib.literalExpression "pkgs.cdi-harness";
      description = "The cdi-harness package.";
    };

    flake = lib.mkOption {
      type = lib.types.str;
      example = "/etc/nixos";
      description = "Path of the flake directory (with flake.nix and flake.lock) whose inputs are updated. Its flake.lock is rewritten on accepted nights.";
    };

    stateDir = lib.mkOption {
      # Absolute, no trailing slash, no white space (a tmpfiles.d line holds it).
      type = lib.types.strMatching "/[^[:space:]]*[^/[:space:]]";
      default = "/var/lib/cdi-harness";
      example = "/srv/cdi-harness";
      description = "Last good report, history and per-night files (an absolute path; also the unit's HOME). Under /var/lib it is the unit's StateDirectory; elsewhere systemd-tmpfiles creates it.";
    };

    schedule = lib.mkOption {
      type = lib.types.str;
      default = "daily";
      example = "*-*-* 03:00:00";
      description = "systemd OnCalendar expression.";
    };

    backend = lib.mkOption {
      type = lib.types.enum [ "host" "sim" ];
      default = "host";
      description = "`host` checks the machine's own engine and GPUs; `sim` a private engine with simulated GPUs.";
    };

    scenarios = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Scenario files or directories (default: the flake's scenarios/).";
    };

    keep = lib.mkOption {
      type = lib.types.ints.positive;
      default = 30;
      description = "Nights of history to keep.";
    };

    allowSkips = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Accept a night whose checks need attention (now skipped, vanished, or moved into or out of xfail since the last good night) instead of keeping the old lock (`--allow-skips`). Regressions block either way.";
    };

    notifyCommand = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "mail -s \"cdi-harness: $CDI_HARNESS_VERDICT\" root < \"$CDI_HARNESS_SUMMARY\"";
      description = "Shell command run after each night; CDI_HARNESS_VERDICT, CDI_HARNESS_SUMMARY, CDI_HARNESS_REPORT and CDI_HARNESS_RUN_DIR are set.";
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--no-build" ];
      description = "Extra arguments for `cdi-harness nightly`.";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.cdi-harness-nightly = {
      description = "cdi-harness nightly regression run after nix flake update";
      after = [ "network-online.target" "docker.service" ];
      wants = [ "network-online.target" ];
      path = [ config.nix.package pkgs.git pkgs.coreutils pkgs.bash ]
        ++ lib.optional config.virtualisation.docker.enable config.virtualisation.docker.package;
      environment.HOME = stateDir;
      serviceConfig = {
        Type = "oneshot";
        StateDirectory = lib.mkIf underVarLib (lib.removePrefix "/var/lib/" stateDir);
        # Exit 1 (a regression) is a result, not a crash of the unit: the notify command
        # and the report carry it. Exit 2 (no verdict) still marks the unit failed.
        SuccessExitStatus = [ 1 ];
        # systemd expands `%` specifiers and `$VAR` even inside shell quotes, so the
        # arguments are quoted for systemd (as nixpkgs' own modules do), not for a shell.
        ExecStart = utils.escapeSystemdExecArgs ([
          "${cfg.package}/bin/cdi-harness" "nightly"
          "--flake" cfg.flake
          "--state-dir" stateDir
          "--backend" cfg.backend
          "--keep" (toString cfg.keep)
          "--quiet"
        ]
        ++ lib.concatMap (s: [ "--scenario" s ]) cfg.scenarios
        ++ lib.optionals (cfg.notifyCommand != null) [ "--notify" cfg.notifyCommand ]
        ++ lib.optional cfg.allowSkips "--allow-skips"
        ++ cfg.extraArgs);
      };
    };

    systemd.tmpfiles.rules = lib.optional (!underVarLib) "d ${stateDir} 0750 root root - -";

    systemd.timers.cdi-harness-nightly = {
      description = "Timer for the cdi-harness nightly regression run";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        Persistent = true;
        RandomizedDelaySec = "15m";
      };
    };
  };
}
