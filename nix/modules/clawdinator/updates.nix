# Updates: the first switch of a fresh instance to its own configuration,
# and the optional self-update timer; both rebuild the whole system.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command given deployCopy deploymentRecord;
  inherit (lib) mkEnableOption mkIf mkOption types;
  # A unit that rebuilds and activates the whole system (like
  # nixos-upgrade.service): it writes /nix, /boot and /etc and restarts
  # units, so the sandbox of the other units cannot apply; it keeps a
  # private /tmp.
  systemSwitch = job: {
    path = [ "/run/current-system/sw" ];
    serviceConfig = {
      Type = "oneshot";
      PrivateTmp = true;
      ExecStart = command (
        [ "host" job "--flake" deployCopy "--record" deploymentRecord ]
        ++ given cfg.instanceName "--instance" "--instance-file" "instance-name"
      );
    };
  };
in
{
  options.services.clawdinator = {
    selfUpdate = {
      enable = mkEnableOption "fetching the published branch into root's deploy copy and switching to its tip on a timer (off: deploys are pinned revisions)";
      schedule = mkOption { type = types.str; default = "daily"; description = "When to update (systemd OnCalendar)."; };
    };

    firstSwitch.enable = mkEnableOption ''
      the first switch of a fresh instance to nixosConfigurations.<instance>
      from its repository copy; never runs on a host with a recorded deployment
      (the image enables it)'';
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !cfg.firstSwitch.enable || cfg.bootstrap.enable;
        message = "services.clawdinator.firstSwitch.enable switches to the repository copy the bundle brings: set services.clawdinator.bootstrap.enable = true.";
      }
    ];

    systemd.services.clawdinator-first-switch = mkIf cfg.firstSwitch.enable ({
      description = "clawdinator: switch a fresh instance to its own configuration, once";
      wantedBy = [ "multi-user.target" ];
      after = [ "clawdinator-repo-seed.service" "clawdinator-secrets.service" ];
      requires = [ "clawdinator-repo-seed.service" ];
      unitConfig.ConditionPathExists = "!${deploymentRecord}";
    } // systemSwitch "first-switch");

    systemd.services.clawdinator-self-update = mkIf cfg.selfUpdate.enable ({
      description = "clawdinator: pull the repository copy and switch to it";
      after = [ "network-online.target" ];
      wants = [ "network-online.target" ];
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
