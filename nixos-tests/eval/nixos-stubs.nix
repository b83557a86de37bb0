# The rest of NixOS, as far as the evaluation kit's modules (docker, docker-rootless,
# nvidia-container-toolkit) and this project's own modules (nixos-tests/modules/*,
# nixos-tests/nightly-module.nix) read or define it: the list in the kit's
# PROVENANCE.md ("What an evaluator must stub"), plus the VM tests' options.
#
# Where merging decides the outcome, an option is typed as nixpkgs types it:
#   - systemd units (nixos/lib/systemd-unit-options.nix): list-valued dependencies
#     concatenate, `serviceConfig`/`unitConfig`/`socketConfig`/`timerConfig` entries are
#     systemd options (lists concatenate, single values must be equal), so two
#     modules setting `ExecStart` differently conflict exactly as on NixOS;
#   - `users.groups` (nixos/modules/config/users-groups.nix) with `users.extraGroups`
#     as its alias, `members` concatenating;
#   - `environment.etc` entries, `assertions`, `warnings`.
# Everything else is a plainly typed declaration, so that a misspelled option is still
# "does not exist" and a wrong type still fails with nixpkgs' own message. Options
# that only exist to be read have NixOS's defaults.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-unit-options.nix's `unitOption`.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (def: lib.isList def.value) defs' then
        lib.concatMap (
          def:
          if builtins.typeOf def.value == "list" then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}"
        ) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  unitConfigOf =
    section:
    mkOption {
      default = { };
      type = types.attrsOf unitOption;
      description = "Options of the [${section}] section.";
    };
  unitNames =
    description:
    mkOption {
      default = [ ];
      type = types.listOf types.str;
      inherit description;
    };

  commonUnit = {
    options = {
      enable = mkOption {
        default = true;
        type = types.bool;
        description = "Whether the unit exists.";
      };
      description = mkOption {
        default = "";
        type = types.singleLineStr;
        description = "Description of this unit.";
      };
      documentation = mkOption {
        default = [ ];
        type = types.listOf types.str;
        description = "URIs of the unit's documentation.";
      };
      requiredBy = unitNames "Units that require this unit.";
      wantedBy = unitNames "Units that want this unit.";
      upheldBy = unitNames "Units that uphold this unit.";
      aliases = unitNames "Aliases of this unit.";
      requires = unitNames "Units this unit requires.";
      wants = unitNames "Units this unit wants.";
      upholds = unitNames "Units this unit upholds.";
      after = unitNames "Units this unit starts after.";
      before = unitNames "Units this unit starts before.";
      bindsTo = unitNames "Units this unit is bound to.";
      partOf = unitNames "Units this unit is part of.";
      conflicts = unitNames "Units this unit conflicts with.";
      requisite = unitNames "Units this unit requires to be started already.";
      onFailure = unitNames "Units activated when this unit fails.";
      onSuccess = unitNames "Units activated when this unit succeeds.";
      unitConfig = unitConfigOf "Unit";
      restartTriggers = mkOption {
        default = [ ];
        type = types.listOf types.unspecified;
        description = "Items whose change restarts the unit.";
      };
      reloadTriggers = mkOption {
        default = [ ];
        type = types.listOf unitOption;
        description = "Items whose change reloads the unit.";
      };
    };
  };

  linesOption =
    description:
    mkOption {
      type = types.lines;
      default = "";
      inherit description;
    };

  # nixos/lib/systemd-unit-options.nix's service options (stage 2).
  serviceUnit =
    { name, config, ... }:
    {
      imports = [ commonUnit ];
      options = {
        environment = mkOption {
          default = { };
          type =
            with types;
            attrsOf (
              nullOr (oneOf [
                str
                path
                package
              ])
            );
          description = "Environment variables of the service's processes.";
        };
        path = mkOption {
          default = [ ];
          type =
            with types;
            listOf (oneOf [
              package
              str
            ]);
          description = "Packages on the service's PATH.";
        };
        serviceConfig = unitConfigOf "Service";
        script = linesOption "Shell commands of the main process.";
        scriptArgs = mkOption {
          type = types.str;
          default = "";
          description = "Arguments of the main process script.";
        };
        preStart = linesOption "Shell commands run before the main process.";
        postStart = linesOption "Shell commands run after the main process started.";
        reload = linesOption "Shell commands run on reload.";
        preStop = linesOption "Shell commands run to stop the service.";
        postStop = linesOption "Shell commands run after the main process exited.";
        restartIfChanged = mkOption {
          type = types.bool;
          default = true;
          description = "Restart on a configuration switch if changed.";
        };
        reloadIfChanged = mkOption {
          type = types.bool;
          default = false;
          description = "Reload on a configuration switch if changed.";
        };
        stopIfChanged = mkOption {
          type = types.bool;
          default = true;
          description = "Stop, then start, on a configuration switch.";
        };
        startAt = mkOption {
          type = with types; either str (listOf str);
          default = [ ];
          description = "Calendar times at which the unit is started (a timer).";
          apply = v: if lib.isList v then v else [ v ];
        };
      };
      # As nixpkgs does: a script becomes ExecStart (a stand-in script here).
      config = lib.mkIf (config.script != "") {
        serviceConfig.ExecStart = "${pkgs.writeShellScript "unit-script-${name}-start" config.script} ${config.scriptArgs}";
      };
    };

  socketUnit = {
    imports = [ commonUnit ];
    options = {
      listenStreams = unitNames "ListenStream= entries.";
      listenDatagrams = unitNames "ListenDatagram= entries.";
      socketConfig = unitConfigOf "Socket";
    };
  };

  timerUnit = {
    imports = [ commonUnit ];
    options.timerConfig = unitConfigOf "Timer";
  };

  # nixos/modules/config/users-groups.nix's groupOpts.
  groupOpts =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
          description = "The group's name.";
        };
        gid = mkOption {
          type = with types; nullOr int;
          default = null;
          description = "The group's GID.";
        };
        members = mkOption {
          type = with types; listOf str;
          default = [ ];
          description = "The user names of the group members.";
        };
      };
    };

  userOpts =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
          description = "The user's name.";
        };
        uid = mkOption {
          type = with types; nullOr int;
          default = null;
          description = "The user's UID.";
        };
        isNormalUser = mkOption {
          type = types.bool;
          default = false;
          description = "A normal (human) user.";
        };
        isSystemUser = mkOption {
          type = types.bool;
          default = false;
          description = "A system user.";
        };
        group = mkOption {
          type = types.str;
          default = "";
          description = "The user's primary group.";
        };
        extraGroups = mkOption {
          type = with types; listOf str;
          default = [ ];
          description = "The user's auxiliary groups.";
        };
        description = mkOption {
          type = types.str;
          default = "";
          description = "The user's full name.";
        };
        home = mkOption {
          type = types.str;
          default = "/var/empty";
          description = "The user's home directory.";
        };
        createHome = mkOption {
          type = types.bool;
          default = false;
          description = "Whether to create the home directory.";
        };
        linger = mkOption {
          type = with types; nullOr bool;
          default = null;
          description = "Whether the user's units linger.";
        };
      };
    };

  etcOpts =
    { name, config, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = "Whether this file is generated.";
        };
        target = mkOption {
          type = types.str;
          default = name;
          description = "Name of the file relative to /etc.";
        };
        text = mkOption {
          type = with types; nullOr lines;
          default = null;
          description = "Text of the file.";
        };
        source = mkOption {
          type = types.path;
          description = "Path of the source file.";
        };
        mode = mkOption {
          type = types.str;
          default = "symlink";
          description = "Mode of the file.";
        };
        user = mkOption {
          type = types.str;
          default = "+0";
          description = "Owner of the file.";
        };
        group = mkOption {
          type = types.str;
          default = "+0";
          description = "Group of the file.";
        };
      };
      config.source = lib.mkIf (config.text != null) (
        lib.mkDefault (pkgs.writeText "etc-${lib.replaceStrings [ "/" ] [ "-" ] name}" config.text)
      );
    };

  packageOption =
    description: default:
    mkOption {
      type = types.package;
      inherit default description;
    };
  boolOption =
    description: default:
    mkOption {
      type = types.bool;
      inherit default description;
    };
in
{
  imports = [
    # nixos/modules/config/users-groups.nix
    (lib.mkAliasOptionModule [ "users" "extraGroups" ] [ "users" "groups" ])
  ];

  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
      description = "Conditions that must hold, each with its message.";
    };
    warnings = mkOption {
      internal = true;
      default = [ ];
      type = types.listOf types.str;
      description = "Warnings printed when the system is built.";
    };

    system.stateVersion = mkOption {
      type = types.str;
      default = lib.trivial.release;
      description = "The NixOS release whose stateful defaults apply.";
    };
    networking.proxy.envVars = mkOption {
      type = types.attrs;
      internal = true;
      default = { };
      description = "Proxy environment variables.";
    };
    ids.gids = mkOption {
      type = types.attrsOf types.int;
      internal = true;
      description = "Static group ids.";
    };

    boot = {
      kernelModules = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Kernel modules loaded in the second boot stage.";
      };
      kernel.sysctl = mkOption {
        type =
          with types;
          attrsOf (
            nullOr (oneOf [
              bool
              str
              int
            ])
          );
        default = { };
        description = "Runtime kernel parameters.";
      };
      kernelPackages = mkOption {
        type = types.raw;
        default = pkgs.linuxPackages;
        description = "The kernel package set.";
      };
      zfs.package = packageOption "The ZFS package." pkgs.zfs;
    };

    environment = {
      systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
        description = "Packages in the system profile.";
      };
      extraInit = linesOption "Shell script code run at login.";
      etc = mkOption {
        type = types.attrsOf (types.submodule etcOpts);
        default = { };
        description = "Files in /etc.";
      };
    };

    users = {
      groups = mkOption {
        type = types.attrsOf (types.submodule groupOpts);
        default = { };
        description = "Additional groups.";
      };
      users = mkOption {
        type = types.attrsOf (types.submodule userOpts);
        default = { };
        description = "Additional user accounts.";
      };
    };

    systemd = {
      package = packageOption "The systemd package." pkgs.systemd;
      packages = mkOption {
        type = types.listOf types.package;
        default = [ ];
        description = "Packages providing systemd units.";
      };
      services = mkOption {
        type = types.attrsOf (types.submodule serviceUnit);
        default = { };
        description = "System services.";
      };
      sockets = mkOption {
        type = types.attrsOf (types.submodule socketUnit);
        default = { };
        description = "System sockets.";
      };
      timers = mkOption {
        type = types.attrsOf (types.submodule timerUnit);
        default = { };
        description = "System timers.";
      };
      user.services = mkOption {
        type = types.attrsOf (types.submodule serviceUnit);
        default = { };
        description = "User services.";
      };
      tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "tmpfiles.d rules.";
      };
    };

    services.udev.extraRules = linesOption "Additional udev rules.";
    services.xserver.videoDrivers = mkOption {
      type = types.listOf types.str;
      default = [
        "modesetting"
        "fbdev"
      ];
      description = "X11 video drivers.";
    };

    hardware = {
      graphics.enable = boolOption "Hardware-accelerated graphics." false;
      graphics.enable32Bit = boolOption "32-bit graphics libraries." false;
      nvidia = {
        datacenter.enable = boolOption "The NVIDIA datacenter driver." false;
        package = mkOption {
          type = types.package;
          default = config.boot.kernelPackages.nvidiaPackages.stable;
          defaultText = lib.literalExpression "config.boot.kernelPackages.nvidiaPackages.stable";
          description = "The NVIDIA driver package.";
        };
        open = mkOption {
          type = with types; nullOr bool;
          default = null;
          description = "The open-source NVIDIA kernel module.";
        };
      };
    };

    virtualisation = {
      podman.enable = boolOption "Podman." false;
      podman.enableNvidia = boolOption "Podman's deprecated NVIDIA support." false;
      containers = {
        enable = boolOption "Common container configuration (/etc/containers)." false;
        containersConf.settings = mkOption {
          type = (pkgs.formats.json { }).type;
          default = { };
          description = "containers.conf settings.";
        };
      };
      # nixos/modules/virtualisation/qemu-vm.nix (the VM tests)
      memorySize = mkOption {
        type = types.ints.positive;
        default = 1024;
        description = "The VM's memory in MiB.";
      };
      diskSize = mkOption {
        type = with types; nullOr ints.positive;
        default = 1024;
        description = "The VM's disk size in MiB.";
      };
      cores = mkOption {
        type = types.ints.positive;
        default = 1;
        description = "The VM's CPU cores.";
      };
      qemu.options = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Extra QEMU options.";
      };
    };

    nixpkgs.config = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "The nixpkgs configuration.";
    };
    nix.package = packageOption "The Nix package." pkgs.nix;
  };

  config = {
    # nixos/modules/misc/ids.nix
    ids.gids.docker = 131;
  };
}
