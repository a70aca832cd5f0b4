# nix/secrets.json, read with builtins only: the secrets every host needs
# (the same file `cargo xtask secrets check` and `bootstrap upload` read).
let
  tokenPrefix = "clawdinator-discord-token-";
in
rec {
  load = file:
    let spec = builtins.fromJSON (builtins.readFile file); in
    if spec.instanceTokenPrefix or null != tokenPrefix
    then throw "${toString file}: instanceTokenPrefix must be \"${tokenPrefix}\""
    else
      let bad = builtins.filter (n: builtins.match "${tokenPrefix}.*|.*/.*|.*[.]age" n != null) spec.common; in
      if bad != [ ] then throw "${toString file}: common secrets must be plain names without .age that are not Discord tokens: ${builtins.concatStringsSep ", " bad}"
      else { inherit (spec) common; inherit tokenPrefix; };

  # The secret names (without .age) one instance receives: every common
  # secret and its own Discord token, sorted as the bundles list them.
  namesFor = file: instance: builtins.sort builtins.lessThan ((load file).common ++ [ instance.discordTokenSecret ]);
}
