# What a host was built from: this repository's revision and, for each
# input of flake.lock's root, the locked revision and its commit time
# (follows resolved). `clawdinator version` prints it with each input's
# age; the Rust side computes the same from a checkout's flake.lock.
{
  fromLock = { lockFile, revision }:
    let
      lock = builtins.fromJSON (builtins.readFile lockFile);
      nodes = lock.nodes;
      # A root input is a node name, or a follows path from the root.
      resolve = ref:
        if builtins.isString ref then ref
        else builtins.foldl' (name: step: let input = nodes.${name}.inputs.${step}; in resolve input) lock.root ref;
      describe = ref:
        let locked = nodes.${resolve ref}.locked; in
        { rev = locked.rev or null; lastModified = locked.lastModified or null; };
    in
    {
      inherit revision;
      inputs = builtins.mapAttrs (_: describe) nodes.${lock.root}.inputs;
    };
}
