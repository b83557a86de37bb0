# The simulated NVIDIA driver of the harness's `sim` backend, in pure Nix (builtins
# only), for VMs without a GPU: the CDI spec (harness/src/sim/spec.rs), the stale
# hand-made second spec, the GPU inventory and the `nvidia-smi` script
# (harness/src/sim/gpu.rs, harness/src/sim/nvidia-smi.sh). `.ci/nix-check` checks that
# the spec, normalized by `cdi-harness cdi normalize`, equals the sim backend's stored
# snapshot, so the VM tests and the sim backend hand containers the same devices.
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    genList
    head
    isAttrs
    isBool
    isInt
    isList
    isString
    map
    replaceStrings
    tail
    toJSON
    toString
    ;

  u64 = import ./u64.nix;

  optionalAttrs = cond: attrs: if cond then attrs else { };
  # serde's `skip_serializing_if = "Vec::is_empty"`.
  nonEmpty = attrs: builtins.removeAttrs attrs (builtins.filter (k: attrs.${k} == [ ]) (attrNames attrs));
in
rec {
  # harness/src/sim/gpu.rs
  gpuName = "NVIDIA H100 80GB HBM3";
  gpuMemoryMiB = 81559;
  driverVersion = "580.95.05";
  nvmlVersion = "580.95";
  cudaVersion = "13.0";
  nvidiaSmiFile = "nvidia-smi";
  inventoryFile = "gpus";
  nvidiaSmiContainerPath = "/usr/bin/nvidia-smi";
  inventoryContainerPath = "/run/nvidia-sim/gpus";

  # The store path name of the VM's support directory (nvidia-smi and gpus).
  supportName = "cdi-harness-sim-support";

  # A sim backend snapshot (snapshots/sim/<name>.snap) as the host backend sees the same
  # spec in a VM: the support files live in the store, not in the sim's temporary
  # directory. `cdi-harness cdi normalize` redacts the store hash.
  vmSnapshot =
    snapText: replaceStrings [ "[SIM_DIR]/support" ] [ "/nix/store/[HASH]-${supportName}" ] snapText;

  # harness/src/sim/spec.rs
  cdiKind = "nvidia.com/gpu";
  cdiVersion = "0.5.0";
  specFileName = "nvidia-container-toolkit.json";
  staleSpecFileName = "nvidia.yaml";
  commonNodes = [
    "/dev/nvidia-modeset"
    "/dev/nvidia-uvm-tools"
    "/dev/nvidia-uvm"
    "/dev/nvidiactl"
  ];

  # sim_gpu_uuid: SplitMix64 of the index (xor "cdih" in the top 32 bits), twice.
  gpuUuid =
    index:
    let
      seed = u64.xor (u64.fromInt index) (u64.fromHex "6364696800000000");
      a = u64.splitmix64 seed;
      b = u64.splitmix64 a;
      l = u64.limbHex;
    in
    "GPU-${l a 3}${l a 2}-${l a 1}-${l a 0}-${l b 3}-${l b 2}${l b 1}${l b 0}";

  # sim_pci_bus_id: bus 0x18 for GPU 0, then a stride of 0x11.
  gpuPciBusId =
    index:
    let
      domain = index / 256;
      rem = index - 256 * domain;
      bus = 24 + 17 * rem - 256 * ((24 + 17 * rem) / 256);
    in
    "${u64.hexUpper 8 domain}:${u64.hexUpper 2 bus}:00.0";

  # sim_gpus: `count` GPUs, index = minor number of /dev/nvidia<index>.
  gpus =
    {
      count,
      name ? gpuName,
    }:
    genList (index: {
      inherit index name;
      uuid = gpuUuid index;
      pciBusId = gpuPciBusId index;
    }) count;

  # inventory_text: what the simulated nvidia-smi reads (tab-separated).
  inventory =
    gpuList:
    concatStringsSep "" (
      [ "# cdi-harness simulated GPUs: minor\tuuid\tname\tpci.bus_id\tmemory.total MiB\n" ]
      ++ map (g: "${toString g.index}\t${g.uuid}\t${g.name}\t${g.pciBusId}\t${toString gpuMemoryMiB}\n") gpuList
    );

  # nvidia_smi_script: the repository's script with its placeholders filled in.
  nvidiaSmiScript =
    replaceStrings
      [ "@INVENTORY@" "@DRIVER@" "@NVML@" "@CUDA@" ]
      [ inventoryContainerPath driverVersion nvmlVersion cudaVersion ]
      (builtins.readFile ../../harness/src/sim/nvidia-smi.sh);

  # device_node_paths: what a rootless engine must find on its host.
  deviceNodePaths = count: genList (i: "/dev/nvidia${toString i}") count ++ commonNodes;

  # Backing::DevNull (rootful: `hostPath: /dev/null`) or Backing::SamePath (rootless:
  # no hostPath; the node must exist under its own path where the engine runs).
  node =
    rootless: path:
    {
      inherit path;
    }
    // optionalAttrs (!rootless) { hostPath = "/dev/null"; };

  roBind = host: container: {
    hostPath = host;
    containerPath = container;
    options = [
      "ro"
      "nosuid"
      "nodev"
      "bind"
    ];
  };

  commonEdits = supportDir: rootless: {
    env = [ "NVIDIA_VISIBLE_DEVICES=void" ];
    deviceNodes = map (node rootless) commonNodes;
    mounts = [
      (roBind "${supportDir}/${nvidiaSmiFile}" nvidiaSmiContainerPath)
      (roBind "${supportDir}/${inventoryFile}" inventoryContainerPath)
    ];
  };

  allDevice = rootless: count: {
    name = "all";
    containerEdits = nonEmpty {
      deviceNodes = genList (i: node rootless "/dev/nvidia${toString i}") count;
    };
  };

  # SpecFault (harness/src/sim/spec.rs): the known regressions a scenario's
  # `[sim] fault` builds into the generated spec.
  staleMountHostPath = "/nix/store/00000000000000000000000000000000-nvidia-x11-570.86.16-6.12.30/lib/libcuda.so.570.86.16";
  staleMountContainerPath = "/usr/lib/x86_64-linux-gnu/libcuda.so.570.86.16";
  failingHookFile = "nvidia-cdi-hook";
  # FAILING_HOOK_SCRIPT: the support directory holds it as `failingHookFile` (0755).
  failingHookScript = builtins.readFile ../../harness/src/sim/failing-hook.sh;
  faultEdits =
    supportDir: fault:
    if fault == null then
      { }
    else if fault == "missing-mount-host-path" then
      {
        mounts = [ (roBind staleMountHostPath staleMountContainerPath) ];
      }
    else if fault == "failing-hook" then
      {
        hooks = [
          {
            hookName = "createContainer";
            path = "${supportDir}/${failingHookFile}";
            args = [
              "nvidia-cdi-hook"
              "create-symlinks"
              "--link"
              "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so"
            ];
          }
        ];
      }
    else
      throw "lib/sim.nix: unknown fault ${toJSON fault}";

  # sim_spec_json / sim_spec_json_rootless / sim_spec_json_with_fault, as a Nix value
  # (builtins.toJSON it). `supportDir` holds `nvidia-smi` and `gpus` (and the failing
  # hook).
  spec =
    {
      count,
      supportDir,
      rootless ? false,
      fault ? null,
    }:
    let
      common = commonEdits supportDir rootless;
      extra = faultEdits supportDir fault;
    in
    {
      inherit cdiVersion;
      kind = cdiKind;
      devices =
        genList (i: {
          name = toString i;
          containerEdits.deviceNodes = [ (node rootless "/dev/nvidia${toString i}") ];
        }) count
        ++ [ (allDevice rootless count) ];
      containerEdits =
        common
        // {
          mounts = common.mounts ++ (extra.mounts or [ ]);
        }
        // optionalAttrs (extra ? hooks) { inherit (extra) hooks; };
    };

  # stale_spec_yaml / stale_spec_yaml_rootless: defines "0" and "all" again, so that
  # it always conflicts with the generated spec in the same directory.
  staleSpec =
    {
      count,
      supportDir,
      rootless ? false,
    }:
    {
      inherit cdiVersion;
      kind = cdiKind;
      devices = [
        {
          name = "0";
          containerEdits.deviceNodes = [ (node rootless "/dev/nvidia0") ];
        }
        (
          if count == 0 then
            {
              name = "all";
              containerEdits.deviceNodes = [ (node rootless "/dev/nvidia0") ];
            }
          else
            allDevice rootless count
        )
      ];
      containerEdits = commonEdits supportDir rootless;
    };

  # Block-style YAML with a document marker, as nvidia-ctk writes it. Strings are
  # always double-quoted (JSON escapes are YAML escapes), so "0" stays a string.
  toYAML =
    value:
    let
      scalar =
        v:
        if isString v then
          toJSON v
        else if isBool v then
          (if v then "true" else "false")
        else if isInt v then
          toString v
        else if v == [ ] then
          "[]"
        else if v == { } then
          "{}"
        else
          throw "toYAML: unsupported value";
      isBlock = v: (isAttrs v && v != { }) || (isList v && v != [ ]);
      lines =
        indent: v:
        if isAttrs v then
          concatLists (
            map (
              k:
              let
                x = v.${k};
              in
              if isBlock x then
                [ "${indent}${k}:" ] ++ lines (if isList x then indent else indent + "  ") x
              else
                [ "${indent}${k}: ${scalar x}" ]
            ) (attrNames v)
          )
        else
          concatLists (
            map (
              x:
              if isBlock x then
                let
                  inner = lines (indent + "  ") x;
                  first = head inner;
                in
                [
                  "${indent}- ${builtins.substring (builtins.stringLength indent + 2) (builtins.stringLength first) first}"
                ]
                ++ tail inner
              else
                [ "${indent}- ${scalar x}" ]
            ) v
          );
    in
    "---\n" + concatStringsSep "\n" (lines "" value) + "\n";
}
