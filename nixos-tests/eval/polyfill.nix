# What nixpkgs' lib (25.11) may take from a newer Nix than the one evaluating it
# (Debian's nix-bin is Nix 2.8). Applied to the kit's lib from outside: the kit's files
# are used as they are.
lib: lib
