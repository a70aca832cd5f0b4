# Registry -> hosts, builtins only: one NixOS host per instance of
# nix/instances.json, with the facts its entry gives (name, bootstrap
# prefix, Discord token file), plus nix/hosts/<name>.nix when it exists
# (for real per-host differences: babelfish, the translation bot, has one).
let
  registry = import ./registry.nix;
in
rec {
  # The settings an instance's registry entry gives its host (a NixOS module).
  settingsFor = name: entry: {
    networking.hostName = name;
    services.clawdinator = {
      instanceName = name;
      bootstrap.s3Prefix = entry.bootstrapPrefix;
      discordTokenFile = "/run/agenix/${entry.discordTokenSecret}";
    };
  };

  # name -> { settings; extraModules; } for every instance of the registry.
  # Evaluation fails, naming the registry file, when the registry is
  # invalid or when nix/hosts/ has a file for a name the registry lacks.
  fromRegistry = { registryFile, hostsDir }:
    let
      entries = registry.load registryFile;
      files = if builtins.pathExists hostsDir then builtins.attrNames (builtins.readDir hostsDir) else [ ];
      named = map (f: builtins.head (builtins.match "(.*)[.]nix" f)) (builtins.filter (f: builtins.match ".*[.]nix" f != null) files);
      # Each host file's name looked up in the registry: a stray one throws.
      looked = map (registry.hostFor registryFile) named;
    in
    builtins.deepSeq looked (builtins.mapAttrs
      (name: entry: {
        settings = settingsFor name entry;
        extraModules =
          let own = hostsDir + "/${name}.nix"; in
          if builtins.pathExists own then [ own ] else [ ];
      })
      entries);
}
