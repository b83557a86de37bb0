# Unsigned 64-bit arithmetic, wrapping like Rust's `wrapping_*`, for pure Nix. A number
# is a list of four 16-bit limbs, least significant first. Nix integers are signed
# 64-bit and recent Nix rejects overflow, so the simulated GPUs' UUIDs (SplitMix64 in
# harness/src/sim/gpu.rs) are computed limb by limb. Builtins only.
let
  inherit (builtins)
    bitAnd
    bitXor
    div
    elemAt
    foldl'
    genList
    stringLength
    substring
    ;

  base = 65536;
  pow2 = n: foldl' (acc: _: acc * 2) 1 (genList (x: x) n);
  limb = a: i: if i < 4 then elemAt a i else 0;

  lowerDigits = "0123456789abcdef";
  upperDigits = "0123456789ABCDEF";
  digitValue =
    c:
    let
      lower = builtins.replaceStrings [ "A" "B" "C" "D" "E" "F" ] [ "a" "b" "c" "d" "e" "f" ] c;
      found = builtins.filter (i: substring i 1 lowerDigits == lower) (genList (i: i) 16);
    in
    if found == [ ] then throw "u64: ${c} is not a hex digit" else builtins.head found;
  parseHex = s: foldl' (acc: i: acc * 16 + digitValue (substring i 1 s)) 0 (genList (i: i) (stringLength s));

  # `width` digits of `n` (0 <= n), most significant first.
  toHexWith =
    digits: width: n:
    builtins.concatStringsSep "" (
      genList (
        i:
        let
          shift = pow2 (4 * (width - 1 - i));
        in
        substring (bitAnd (div n shift) 15) 1 digits
      ) width
    );
in
rec {
  # A non-negative Nix integer below 2^63.
  fromInt =
    n:
    genList (
      i:
      bitAnd (div n (pow2 (16 * i))) 65535
    ) 4;

  # Exactly 16 hex digits, most significant first (Nix has no hex literals).
  fromHex =
    s:
    if stringLength s != 16 then
      throw "u64.fromHex: ${s} must have 16 digits"
    else
      genList (i: parseHex (substring (12 - 4 * i) 4 s)) 4;

  add =
    a: b:
    let
      step =
        acc: i:
        let
          sum = limb a i + limb b i + acc.carry;
        in
        {
          limbs = acc.limbs ++ [ (bitAnd sum 65535) ];
          carry = div sum base;
        };
    in
    (foldl' step {
      limbs = [ ];
      carry = 0;
    } (genList (i: i) 4)).limbs;

  # Product modulo 2^64: schoolbook on 16-bit limbs (each partial sum stays below 2^35).
  mul =
    a: b:
    let
      column = k: foldl' (acc: i: acc + limb a i * limb b (k - i)) 0 (genList (i: i) (k + 1));
      step =
        acc: k:
        let
          sum = column k + acc.carry;
        in
        {
          limbs = acc.limbs ++ [ (bitAnd sum 65535) ];
          carry = div sum base;
        };
    in
    (foldl' step {
      limbs = [ ];
      carry = 0;
    } (genList (i: i) 4)).limbs;

  xor = a: b: genList (i: bitXor (limb a i) (limb b i)) 4;

  # Logical shift right by n bits (0 <= n < 64).
  shr =
    a: n:
    let
      q = div n 16;
      r = n - 16 * q;
    in
    genList (
      k: bitAnd (div (limb a (k + q)) (pow2 r) + limb a (k + q + 1) * pow2 (16 - r)) 65535
    ) 4;

  # Limb i (16 bits) as 4 hex digits.
  limbHex = a: i: toHexWith lowerDigits 4 (limb a i);

  # A small non-negative integer as `width` hex digits.
  hex = toHexWith lowerDigits;
  hexUpper = toHexWith upperDigits;

  # SplitMix64 (harness/src/sim/gpu.rs `splitmix64`).
  splitmix64 =
    x:
    let
      x1 = add x (fromHex "9e3779b97f4a7c15");
      x2 = mul (xor x1 (shr x1 30)) (fromHex "bf58476d1ce4e5b9");
      x3 = mul (xor x2 (shr x2 27)) (fromHex "94d049bb133111eb");
    in
    xor x3 (shr x3 31);
}
