# The public PR-intent dataset: on a timer, a public-safe tree of shared
# memory (the orchestrator's skill version v1) is mirrored to a prefix of
# the public bucket, at the original fleet's keys `v1/<owner>-<repo>/<N>.txt`
# and `.meta.json` (`clawdinator host publish-tree`: changed files only,
# removed ones deleted, links never followed). It runs as a dynamic user of
# the agents' group: not the agents' user (the write needs the instance
# role, which that user cannot reach), and not root, so a link an agent
# slips into the tree leads to nothing worth publishing (the secrets are
# their owners' alone). The metadata service lets it through by its
# cgroup alone, while it runs (lib.nix's metadataAccess: root adds the rule
# before it starts and takes it back when it stops).
{ config, lib, pkgs, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command harden metadataAccess regionWords;
  unit = h.publisherUnit;
  inherit (lib) literalExpression mkEnableOption mkIf mkOption types;
in
{
  options.services.clawdinator.publicTree = {
    enable = mkEnableOption "publishing the PR-intent tree to the public bucket (the instance must be in OpenTofu's pr_intent_publishers)";
    bucket = mkOption { type = types.str; default = "openclaw-pr-intent"; description = "The public bucket (OpenTofu output pr_intent_bucket_name)."; };
    prefix = mkOption { type = types.str; default = "v1/"; description = "The key prefix mirrored (the original fleet's layout); the bucket policy makes only v1/ public."; };
    sourceDir = mkOption {
      type = types.externalPath;
      default = "${cfg.memoryDir}/pr-intent/v1";
      defaultText = literalExpression ''"''${memoryDir}/pr-intent/v1"'';
      description = "The tree published (skill version v1 of the orchestrator's memos): only public-safe files belong here.";
    };
    schedule = mkOption { type = types.str; default = "*:0/10"; description = "When to publish (systemd OnCalendar)."; };
  };

  config = mkIf (cfg.enable && cfg.publicTree.enable) {
    systemd.services.${unit} = {
      description = "clawdinator: mirror ${cfg.publicTree.sourceDir} to s3://${cfg.publicTree.bucket}/${cfg.publicTree.prefix}";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "clawdinator-memory-init.service" ];
      unitConfig.RequiresMountsFor = [ cfg.memoryDir ];
      serviceConfig = harden { } // metadataAccess pkgs unit // {
        Type = "oneshot";
        # A oneshot has no start timeout by default: a read that hangs (a
        # file an agent swapped) would hold the unit, and every later run,
        # forever. Well under the default 10-minute schedule; the stop
        # still takes the cgroup's rule back (ExecStopPost).
        TimeoutStartSec = "5min";
        DynamicUser = true;
        SupplementaryGroups = [ cfg.group ];
        ExecStart = command (
          [ "host" "publish-tree" "--from" cfg.publicTree.sourceDir "--bucket" cfg.publicTree.bucket "--prefix" cfg.publicTree.prefix ]
            ++ regionWords cfg.bootstrap.region
        );
      };
    };

    systemd.timers.${unit} = {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.publicTree.schedule;
        Persistent = true;
      };
    };
  };
}
