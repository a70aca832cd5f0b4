# Updates: the first switch of a fresh instance to its own system, and the
# optional self-update timer. Both take this host's system from the newest
# release manifest (releases/<rev>.json in the fleet bucket) and switch to
# it as `fleet switch` does: fetched signed from the fleet's cache,
# health-gated, rolled back on failure. Nothing is built or evaluated here.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command given regionWords deploymentRecord;
  inherit (lib) mkEnableOption mkIf mkOption types;
  # A unit that activates a whole system (like nixos-upgrade.service): it
  # writes /nix, /boot and /etc and restarts units, so the sandbox of the
  # other units cannot apply; it keeps a private /tmp.
  systemSwitch = job: {
    path = [ "/run/current-system/sw" ];
    after = [ "network-online.target" "amazon-init.service" ];
    wants = [ "network-online.target" ];
    serviceConfig = {
      Type = "oneshot";
      PrivateTmp = true;
      ExecStart = command (
        [ "host" job "--record" deploymentRecord ]
        ++ given cfg.instanceName "--instance" "--instance-file" "instance-name"
        ++ given cfg.bootstrap.s3Bucket "--bucket" "--bucket-file" "bucket"
        ++ given cfg.fleetCache.bucket "--cache-bucket" "--cache-bucket-file" "cache-bucket"
        ++ regionWords cfg.bootstrap.region
      );
    };
  };
in
{
  options.services.clawdinator = {
    selfUpdate = {
      enable = mkEnableOption "switching to this host's system in the newest release on a timer (off: the release lane switches hosts)";
      schedule = mkOption { type = types.str; default = "daily"; description = "When to update (systemd OnCalendar)."; };
    };

    firstSwitch.enable = mkEnableOption ''
      the first switch of a fresh instance to its system in the newest
      release; never runs on a host with a recorded deployment (the image
      enables it)'';
  };

  config = mkIf cfg.enable {
    systemd.services.clawdinator-first-switch = mkIf cfg.firstSwitch.enable ({
      description = "clawdinator: switch a fresh instance to its system in the newest release, once";
      wantedBy = [ "multi-user.target" ];
      unitConfig.ConditionPathExists = "!${deploymentRecord}";
    } // systemSwitch "first-switch");

    systemd.services.clawdinator-self-update = mkIf cfg.selfUpdate.enable ({
      description = "clawdinator: switch to this host's system in the newest release";
    } // systemSwitch "self-update");

    systemd.timers.clawdinator-self-update = mkIf cfg.selfUpdate.enable {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.selfUpdate.schedule;
        Persistent = true;
      };
    };
  };
}
