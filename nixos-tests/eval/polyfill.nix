# What nixpkgs' lib (25.11) takes from a newer Nix than the one evaluating it here
# (Debian's nix-bin is Nix 2.8), supplied from outside: the kit's files are used as they
# are. lib is a fixed point, so an attribute replaced with `lib.extend` is what lib's own
# functions call too.
#
# Of the builtins lib names, Nix 2.8 lacks `readFileType` (Nix 2.14; lib.filesystem's
# `pathType`, behind `pathIsDirectory`, `pathIsRegularFile`, lib.sources and
# lib.fileset) and `warn` (Nix 2.23; lib already falls back to `trace` itself). On a Nix
# that has `readFileType`, it is used.
lib:
let
  # readFileType as nixpkgs emulated it before Nix 2.14: the entry's type in its
  # directory's listing; "/" is a directory.
  readFileType =
    builtins.readFileType or (
      path:
      let
        name = baseNameOf path;
      in
      if name == "" then "directory" else (builtins.readDir (dirOf path)).${name}
    );
in
lib.extend (
  final: prev: {
    filesystem = prev.filesystem // {
      pathType = readFileType;
    };
    pathType = readFileType;
  }
)
