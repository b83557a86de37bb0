# A scenario file as the harness reads it, computed by Nix alone (builtins only, no
# nixpkgs): `path -> { name, machine, facts, gpus, image, expectedDevices, appliesTo }`.
#
# The value is exactly what `cdi-harness scenario export FILE` prints
# (`Scenario::export_json` in harness/src/scenario.rs); `.ci/nix-check` and the flake's
# `scenario-export` check evaluate both and require them equal, so Nix and the harness
# can never read a scenario differently. The defaults mirror `machine_facts`,
# `MachineFacts::cdi_enabled` and `default_devices`; a value the harness rejects is
# rejected here too (with the same file, key and reason) where it decides one of
# these fields. A value in `[machine.force]` is the effective one: lib/machine-module.nix
# applies it with lib.mkForce.
path:
let
  inherit (builtins)
    all
    attrNames
    elem
    elemAt
    genList
    head
    isAttrs
    isBool
    isList
    isString
    length
    match
    toString
    typeOf
    ;

  file = toString path;
  raw = fromTOML (builtins.readFile path);

  invalid = key: reason: throw "${file}: `${key}`: ${reason}";

  # Type names as the `toml` crate prints them (`Value::type_str`).
  tomlType =
    v:
    {
      string = "string";
      int = "integer";
      float = "float";
      bool = "boolean";
      list = "array";
      set = "table";
    }
    .${typeOf v} or (typeOf v);

  # The file stem (Rust's `Path::file_stem`): everything before the last dot, unless
  # the only dot starts the name.
  base = baseNameOf file;
  stem =
    let
      m = match "(.+)\\.[^.]*" base;
    in
    if m == null then base else head m;
  name =
    if stem != "" && match "[A-Za-z0-9_-]+" stem != null then
      stem
    else
      invalid "(file name)" "scenario name ${builtins.toJSON stem} must be letters, digits, '-' or '_' (it prefixes trial names)";

  # The harness parses its own part of the file strictly (serde deny_unknown_fields).
  known = [
    "description"
    "image"
    "machine"
    "gpus"
    "applies-to"
    "expect"
    "run"
    "sim"
  ];
  unknown = builtins.filter (k: !(elem k known)) (attrNames raw);
  checked =
    if unknown != [ ] then
      throw "${file}: unknown field `${head unknown}`, expected one of ${builtins.concatStringsSep ", " (map (k: "`${k}`") known)}"
    else if !(raw ? machine) then
      throw "${file}: missing field `machine`"
    else if !(raw ? description) then
      throw "${file}: missing field `description`"
    else if match "[[:space:]]*" raw.description != null then
      invalid "description" "must say what machine this is"
    else
      raw;

  machine = checked.machine;

  # `[machine.force]`: option values NixOS applies with lib.mkForce
  # (lib/machine-module.nix); the effective value of an option is the forced one merged
  # over the plain one (scenario.rs `MachineView`).
  forceTable =
    if !(machine ? force) then
      null
    else if isAttrs machine.force then
      machine.force
    else
      invalid "machine.force" "must be a table of NixOS options whose values are forced (lib.mkForce), found ${tomlType machine.force}";

  # `walk` of machine_facts: follows an option path; an intermediate value that is not a
  # table is an error naming the option it should hold.
  walk =
    prefix: table: optPath:
    let
      n = length optPath;
      go =
        cur: i:
        let
          key = elemAt optPath i;
          v = cur.${key};
        in
        if !(cur ? ${key}) then
          null
        else if i + 1 == n then
          v
        else if isAttrs v then
          go v (i + 1)
        else
          invalid "${prefix}.${builtins.concatStringsSep "." (genList (j: elemAt optPath j) (i + 1))}"
            "must be a table (it holds option ${elemAt optPath (i + 1)}), found ${tomlType v}";
    in
    go table 0;

  # A forced leaf replaces; tables merge key by key (scenario.rs `merge_forced`).
  mergeForced =
    plain: forced:
    if isAttrs plain && isAttrs forced then
      plain // builtins.mapAttrs (k: fv: if plain ? ${k} then mergeForced plain.${k} fv else fv) forced
    else
      forced;

  # The effective value at an option path (plain walked first, then forced).
  get =
    optPath:
    let
      plain = walk "machine" machine optPath;
      forced = if forceTable == null then null else walk "machine.force" forceTable optPath;
    in
    builtins.seq plain (
      if forced == null then
        plain
      else if plain == null then
        forced
      else
        mergeForced plain forced
    );

  # Where a problem with the value at `optPath` is reported: in [machine.force] when the
  # value is forced there.
  keyOf =
    optPath:
    let
      found = builtins.tryEval (walk "" forceTable optPath);
      forced = forceTable != null && found.success && found.value != null;
    in
    "machine.${if forced then "force." else ""}${builtins.concatStringsSep "." optPath}";

  getBool =
    optPath:
    let
      v = get optPath;
    in
    if v == null || isBool v then
      v
    else
      invalid (keyOf optPath) "must be true or false, found ${tomlType v}";

  orFalse = v: if v == null then false else v;

  dockerEnabled = orFalse (getBool [
    "virtualisation"
    "docker"
    "enable"
  ]);
  rootlessEnabled = orFalse (getBool [
    "virtualisation"
    "docker"
    "rootless"
    "enable"
  ]);
  rootlessDefault = orFalse (getBool [
    "virtualisation"
    "docker"
    "rootless"
    "setSocketVariable"
  ]);
  toolkitEnabled = orFalse (getBool [
    "hardware"
    "nvidia-container-toolkit"
    "enable"
  ]);

  strategyKey = [
    "hardware"
    "nvidia-container-toolkit"
    "device-name-strategy"
  ];
  strategyRaw = get strategyKey;
  deviceNameStrategy =
    if strategyRaw == null then
      "index"
    else if !(isString strategyRaw) then
      invalid (keyOf strategyKey) "must be a string, found ${tomlType strategyRaw}"
    else if
      !(elem strategyRaw [
        "index"
        "uuid"
        "type-index"
      ])
    then
      invalid (keyOf strategyKey) "${builtins.toJSON strategyRaw} is not one of \"index\", \"uuid\", \"type-index\""
    else
      strategyRaw;

  settings = [
    "virtualisation"
    "docker"
    "daemon"
    "settings"
  ];

  runtimesKey = settings ++ [ "runtimes" ];
  runtimesRaw = get runtimesKey;
  manualRuntimes =
    if runtimesRaw == null then
      { }
    else if !(isAttrs runtimesRaw) then
      invalid (keyOf runtimesKey) "must be a table of runtimes, found ${tomlType runtimesRaw}"
    else
      builtins.mapAttrs (
        rtName: rt:
        if isAttrs rt && rt ? path && isString rt.path then
          rt
        else
          invalid (keyOf (runtimesKey ++ [ rtName ])) "a runtime needs a string `path` (as dockerd's daemon.json does)"
      ) runtimesRaw;

  defaultRuntimeKey = settings ++ [ "default-runtime" ];
  defaultRuntime = get defaultRuntimeKey;

  cdiFeature = getBool (
    settings
    ++ [
      "features"
      "cdi"
    ]
  );
  # MachineFacts::cdi_enabled: the toolkit module sets features.cdi = true for
  # docker >= 25 unless the configuration says otherwise.
  cdiEnabled = if cdiFeature == null then toolkitEnabled else cdiFeature;

  membersKey = [
    "users"
    "extraGroups"
    "docker"
    "members"
  ];
  membersRaw = get membersKey;
  dockerGroupMembers =
    if membersRaw == null then
      [ ]
    else if !(isList membersRaw) then
      invalid (keyOf membersKey) "must be a list of user names, found ${tomlType membersRaw}"
    else
      genList (
        i:
        let
          m = elemAt membersRaw i;
        in
        if isString m then
          m
        else
          invalid "${keyOf membersKey}[${toString i}]" "must be a user name string, found ${tomlType m}"
      ) (length membersRaw);

  # The options machine_facts only type-checks: a wrong type there fails the file too.
  enableOnBoot = getBool [
    "virtualisation"
    "docker"
    "enableOnBoot"
  ];
  suppressAssertion = getBool [
    "hardware"
    "nvidia-container-toolkit"
    "suppressNvidiaDriverAssertion"
  ];
  enableNvidia = getBool [
    "virtualisation"
    "docker"
    "enableNvidia"
  ];
  defaultRuntimeChecked =
    if defaultRuntime == null || isString defaultRuntime then
      defaultRuntime
    else
      invalid (keyOf defaultRuntimeKey) "must be a string, found ${tomlType defaultRuntime}";
  socketChecked =
    if rootlessDefault && !rootlessEnabled then
      invalid (keyOf [
        "virtualisation"
        "docker"
        "rootless"
        "setSocketVariable"
      ]) "is true but rootless.enable is not: there is no rootless engine to point at"
    else
      null;

  # Forced in machine_facts' order, so that a file with several bad values is
  # rejected for the same one as by the harness.
  inOrder = builtins.foldl' (acc: v: builtins.deepSeq acc (builtins.deepSeq v null)) null [
    forceTable
    dockerEnabled
    rootlessEnabled
    rootlessDefault
    socketChecked
    enableOnBoot
    toolkitEnabled
    suppressAssertion
    deviceNameStrategy
    enableNvidia
    manualRuntimes
    defaultRuntimeChecked
    cdiFeature
    dockerGroupMembers
  ];

  facts = builtins.seq inOrder {
    inherit
      dockerEnabled
      rootlessEnabled
      rootlessDefault
      toolkitEnabled
      cdiEnabled
      deviceNameStrategy
      manualRuntimes
      dockerGroupMembers
      ;
  };

  # `[gpus]` may be left out: count = "auto".
  rawGpus = checked.gpus or { };
  gpuKeys = [
    "count"
    "pci"
    "model"
    "none"
  ];
  count =
    let
      unknownGpuKeys = builtins.filter (k: !(elem k gpuKeys)) (attrNames rawGpus);
    in
    if unknownGpuKeys != [ ] then
      throw "${file}: unknown field `${head unknownGpuKeys}` in [gpus]"
    else if declaredCount == "auto" && (rawGpus.none or false) then
      invalid "gpus.none" "is true but gpus.count is \"auto\" (the default): a machine without GPUs sets count = 0 with none = true"
    else if declaredCount == "auto" then
      # scenario::SIM_AUTO_GPU_COUNT, or as many as gpus.pci lists: what the VM gets.
      (if isList (rawGpus.pci or [ ]) && rawGpus.pci or [ ] != [ ] then length rawGpus.pci else 2)
    else if typeOf declaredCount == "int" && declaredCount > 64 then
      invalid "gpus.count" "${toString declaredCount} GPUs is more than any machine has (at most 64)"
    else if typeOf declaredCount != "int" || declaredCount < 0 then
      invalid "gpus.count" "must be \"auto\" (the GPUs the driver reports) or a number of GPUs from 0 to 64, found ${builtins.toJSON declaredCount}"
    else if declaredCount == 0 && !(rawGpus.none or false) then
      invalid "gpus.count" "is 0: a machine without GPUs must say so with `none = true` in [gpus]; otherwise give the number of GPUs, or \"auto\""
    else if declaredCount > 0 && (rawGpus.none or false) then
      invalid "gpus.none" "is true but gpus.count is ${toString declaredCount}: remove `none` or set count = 0"
    else
      declaredCount;
  # `count = "auto"` (the default): the driver's GPUs on a host; `count` above in a VM.
  declaredCount = rawGpus.count or "auto";
  auto = declaredCount == "auto";
  pci =
    let
      list = rawGpus.pci or [ ];
      isPci = a: isString a && match "([0-9a-fA-F]{4,8}:)?[0-9a-fA-F]{2}:[0-1][0-9a-fA-F]\\.[0-7]" a != null;
      bad = builtins.filter (i: !(isPci (elemAt list i))) (genList (i: i) (length list));
    in
    if !(isList list) then
      throw "${file}: `gpus.pci` must be a list of PCI addresses"
    else if bad != [ ] then
      invalid "gpus.pci[${toString (head bad)}]" "${builtins.toJSON (elemAt list (head bad))} is not a PCI address like \"0000:01:00.0\""
    else if list != [ ] && length list != count then
      invalid "gpus.pci" "lists ${toString (length list)} addresses but gpus.count is ${toString count}"
    else
      list;

  # scenario::DEFAULT_IMAGE. (The harness also checks the reference grammar; the
  # agreement check covers every shipped scenario.)
  image =
    let
      v = checked.image or "nvidia/cuda:13.1.1-base-ubuntu24.04";
    in
    if isString v && v != "" then v else invalid "image" "must be an image reference";

  # expect.devices, else scenario::default_devices: nvidia.com/gpu=0 .. count-1 and all.
  expectedDevices =
    let
      declared = (checked.expect or { }).devices or null;
    in
    if declared != null && auto then
      invalid "expect.devices" "a fixed list of devices needs a fixed gpus.count; with count = \"auto\" the devices are the driver's GPUs (remove expect.devices or set a count)"
    else if declared != null then
      if isList declared && all isString declared then
        declared
      else
        invalid "expect.devices" "must be a list of CDI device names"
    else if count == 0 then
      [ ]
    # scenario::devices_for_inventory of the simulated GPUs (no MIG).
    else if auto && deviceNameStrategy == "uuid" then
      genList (i: "nvidia.com/gpu=${(import ./sim.nix).gpuUuid i}") count ++ [ "nvidia.com/gpu=all" ]
    else if auto && deviceNameStrategy == "type-index" then
      genList (i: "nvidia.com/gpu=gpu${toString i}") count ++ [ "nvidia.com/gpu=all" ]
    else if auto && deviceNameStrategy != "index" then
      invalid "machine.hardware.nvidia-container-toolkit.device-name-strategy" "device-name-strategy ${builtins.toJSON deviceNameStrategy} is not one nvidia-ctk knows (index, uuid, type-index)"
    else if deviceNameStrategy != "index" then
      invalid "machine.hardware.nvidia-container-toolkit.device-name-strategy" "device-name-strategy ${builtins.toJSON deviceNameStrategy} names devices by UUID; list the expected names in expect.devices"
    else
      genList (i: "nvidia.com/gpu=${toString i}") count ++ [ "nvidia.com/gpu=all" ];
  # `applies-to`: where the scenario's verdicts mean something (all three by default),
  # in the order sim, vm, host; a scenario with declared failures models a broken
  # machine and may not list "host".
  places = [
    "sim"
    "vm"
    "host"
  ];
  appliesTo =
    let
      list = checked."applies-to" or places;
      indices = genList (i: i) (length list);
      unknownAt = builtins.filter (i: !(elem (elemAt list i) places)) indices;
      twiceAt = builtins.filter (
        i: elem (elemAt list i) (genList (j: elemAt list j) i)
      ) indices;
      failures = (checked.expect or { }).fail or [ ];
    in
    if !(isList list) || !(all isString list) then
      invalid "applies-to" "must be a list of places: \"sim\", \"vm\", \"host\""
    else if unknownAt != [ ] then
      invalid "applies-to[${toString (head unknownAt)}]" "${builtins.toJSON (elemAt list (head unknownAt))} is not a place a scenario runs; use \"sim\", \"vm\" or \"host\""
    else if twiceAt != [ ] then
      invalid "applies-to[${toString (head twiceAt)}]" "${builtins.toJSON (elemAt list (head twiceAt))} is listed twice"
    else if list == [ ] then
      invalid "applies-to" "is an empty list, so the scenario would run nowhere; list \"sim\", \"vm\" and/or \"host\", or remove the key (all three)"
    else if failures != [ ] && elem "host" list then
      invalid "applies-to" "includes \"host\", but the scenario declares failures ([[expect.fail]]): it models a broken machine, and a healthy host would fail or pass its checks for meaningless reasons; set applies-to = [\"sim\", \"vm\"]"
    else
      builtins.filter (p: elem p list) places;
  result = {
    inherit
      name
      machine
      facts
      image
      expectedDevices
      appliesTo
      ;
    gpus = {
      inherit count pci;
      declared = declaredCount;
    };
  };
in
# Checked in the harness's order (file name, description, machine, gpus, image,
# devices), so that a file with several problems is rejected for the same one.
builtins.foldl' (acc: v: builtins.deepSeq v acc) result [
  name
  checked
  facts
  count
  pci
  image
  expectedDevices
  appliesTo
]
