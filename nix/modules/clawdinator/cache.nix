# The fleet's binary cache: hosts never build. CI builds every host's
# system once per revision and signs its closure with the fleet's cache key
# (`cargo xtask release build`); a switch realises it from the cache. nix
# refuses every path not signed by a key listed here, and with max-jobs 0
# a switch cannot build one instead.
#
# Only root uses the nix daemon. A daemon client passes its own max-jobs,
# and the daemon builds what it is given as nixbld users; a fixed-output
# build has the host's network, and the client reads what the build
# prints. The agents need none of it: the gateway and their tools run from
# the store (world-readable, no daemon needed), and every switch, fetch and
# garbage collection is root's. Operators in an SSM session (ssm-user)
# use sudo, as they already must for a switch.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg nullOrStr runTime;
  inherit (lib) mkIf mkOption types;
  upstreamKey = "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";
  # The names under which nix.conf could admit the agents: everyone, their
  # user, or a group they are in.
  agentNames = [ "*" cfg.user ] ++ map (g: "@${g}") ([ cfg.group ] ++ (config.users.users.${cfg.user}.extraGroups or [ ]));
  admitted = setting: lib.unique (lib.filter (n: builtins.elem n agentNames) (config.nix.settings.${setting} or [ ]));
in
{
  options.services.clawdinator.fleetCache = {
    bucket = nullOrStr (runTime "The fleet's binary cache bucket, which switches fetch systems from" "cache-bucket");
    publicKey = mkOption {
      type = types.str;
      default = lib.fileContents ../../keys/fleet-cache.pub;
      defaultText = lib.literalExpression "lib.fileContents ./nix/keys/fleet-cache.pub";
      description = "The public half of the fleet's cache key (its secret half is CI's CLAWDINATOR_CACHE_KEY): with cache.nixos.org's, the only key nix trusts on a host.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = builtins.match "[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=" cfg.fleetCache.publicKey != null;
        message = "services.clawdinator.fleetCache.publicKey must be a nix public key (name:base64), as `nix-store --generate-binary-cache-key` writes it.";
      }
    ] ++ map
      (setting: {
        assertion = admitted setting == [ ];
        message = "nix.settings.${setting} admits the agents (${lib.concatStringsSep ", " (admitted setting)}): the nix daemon would build for ${cfg.user}, as nixbld users with the host's network. Only root uses the daemon on a clawdinator host.";
      }) [ "allowed-users" "trusted-users" ];

    nix.settings = {
      # Upstream's key and the fleet's, nothing else (no third-party cache).
      trusted-public-keys = [ upstreamKey cfg.fleetCache.publicKey ];
      require-sigs = true;
      # A switch builds nothing (host switch also passes --option max-jobs 0).
      max-jobs = 0;
      builders = "";
      # The daemon serves root alone (see the top of this file).
      allowed-users = [ "root" ];
      trusted-users = [ "root" ];
    };
  };
}
