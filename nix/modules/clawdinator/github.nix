# GitHub: App installation tokens refreshed on a timer into an env file
# the gateway and the sync read, and the snapshot of the organisation's
# open pull requests and issues into shared memory.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg agenix githubEnvFile command harden noMetadata runDir;
  inherit (lib) mkEnableOption mkIf mkOption optional types;
in
{
  options.services.clawdinator = {
    githubApp = {
      enable = mkEnableOption "GitHub App installation tokens in ${githubEnvFile} (clawdinator-github-app-token)";
      appId = mkOption { type = types.str; default = ""; description = "The GitHub App's id."; };
      installationId = mkOption { type = types.str; default = ""; description = "The App's installation id for the organisation."; };
      privateKeyFile = mkOption { type = types.str; default = "${agenix}/clawdinator-github-app.pem"; description = "The App's private key (PEM)."; };
      schedule = mkOption { type = types.str; default = "45min"; description = "Time between refreshes (a systemd time span); tokens live an hour."; };
    };

    githubSync = {
      enable = mkEnableOption "the hourly GitHub snapshot (open pull requests and issues of `org`) into shared memory";
      org = mkOption { type = types.str; default = "openclaw"; description = "The GitHub organisation to snapshot."; };
      schedule = mkOption { type = types.str; default = "hourly"; description = "When to snapshot (systemd OnCalendar)."; };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !cfg.githubApp.enable || (cfg.githubApp.appId != "" && cfg.githubApp.installationId != "");
        message = "services.clawdinator.githubApp.enable needs githubApp.appId and githubApp.installationId (the App's settings page and its installation URL show both).";
      }
    ];

    systemd.services.clawdinator-github-app-token = mkIf cfg.githubApp.enable {
      description = "clawdinator: a fresh GitHub App installation token in ${githubEnvFile}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "clawdinator-secrets.service" ];
      before = optional cfg.gateway.enable "clawdinator.service";
      serviceConfig = harden { rw = [ runDir ]; } // noMetadata // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.group;
        ExecStart = command [
          "secrets"
          "github-token"
          "--app-id" cfg.githubApp.appId
          "--installation-id" cfg.githubApp.installationId
          "--pem" cfg.githubApp.privateKeyFile
          "--env-file" githubEnvFile
        ];
      };
    };

    systemd.timers.clawdinator-github-app-token = mkIf cfg.githubApp.enable {
      description = "clawdinator: refresh the GitHub App token every ${cfg.githubApp.schedule}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnActiveSec = "0";
        OnUnitActiveSec = cfg.githubApp.schedule;
      };
    };

    systemd.services.clawdinator-github-sync = mkIf cfg.githubSync.enable {
      description = "clawdinator: snapshot ${cfg.githubSync.org}'s open pull requests and issues into shared memory";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "clawdinator-memory-init.service" ] ++ optional cfg.githubApp.enable "clawdinator-github-app-token.service";
      unitConfig.RequiresMountsFor = [ cfg.memoryDir ];
      serviceConfig = harden { rw = [ cfg.memoryDir ]; } // noMetadata // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.group;
        EnvironmentFile = optional cfg.githubApp.enable githubEnvFile;
        ExecStart = command [ "host" "github-sync" "--org" cfg.githubSync.org "--root" cfg.memoryDir ];
      };
    };

    systemd.timers.clawdinator-github-sync = mkIf cfg.githubSync.enable {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.githubSync.schedule;
        Persistent = true;
      };
    };
  };
}
