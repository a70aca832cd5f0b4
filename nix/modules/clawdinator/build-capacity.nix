# Build capacity: `host switch` builds the host's whole system on the host
# (a t3.large has 8 GiB of memory), so it gets swap, and a binary cache
# that holds most of what the fleet's flake builds.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg;
  inherit (lib) mkAfter mkIf mkOption optional types;
in
{
  options.services.clawdinator = {
    swapSizeMiB = mkOption {
      type = types.nullOr types.ints.positive;
      default = 8192;
      description = "A swap file (/swapfile) of this many MiB for builds on the host; null: none.";
    };

    binaryCache = {
      substituters = mkOption {
        type = types.listOf types.str;
        default = [ "https://cache.garnix.io" ];
        description = "Binary caches the host's builds use, after cache.nixos.org.";
      };
      trustedPublicKeys = mkOption {
        type = types.listOf types.str;
        default = [ "cache.garnix.io:CTFPyKSLcx5RMJKfLo5EEPUObbA78b0YQ2DTCJXqr9g=" ];
        description = "The keys that sign those caches' paths.";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.binaryCache.substituters == [ ] || cfg.binaryCache.trustedPublicKeys != [ ];
        message = "services.clawdinator.binaryCache.substituters without trustedPublicKeys: nix would refuse every path from them; add the caches' keys.";
      }
    ];

    swapDevices = optional (cfg.swapSizeMiB != null) { device = "/swapfile"; size = cfg.swapSizeMiB; };

    nix.settings.substituters = mkAfter cfg.binaryCache.substituters;
    nix.settings.trusted-public-keys = mkAfter cfg.binaryCache.trustedPublicKeys;
  };
}
