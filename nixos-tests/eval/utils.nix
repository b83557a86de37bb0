# `utils` as NixOS passes it to modules (nixos/lib/utils.nix), reduced to what the
# modules evaluated here use. Written after nixpkgs' own definitions (25.11): an argument
# is JSON-quoted and every `%` and `$` doubled, so that systemd expands neither
# specifiers nor environment variables inside it (shell quoting would not stop either).
lib:
let
  inherit (builtins)
    isFloat
    isInt
    isPath
    isString
    replaceStrings
    toJSON
    ;
in
rec {
  escapeSystemdExecArg =
    arg:
    let
      s =
        if isPath arg then
          "${arg}"
        else if isString arg then
          arg
        else if isInt arg || isFloat arg || lib.isDerivation arg then
          toString arg
        else
          throw "escapeSystemdExecArg only allows strings, paths, numbers and derivations";
    in
    replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toJSON s);

  escapeSystemdExecArgs = lib.concatMapStringsSep " " escapeSystemdExecArg;
}
