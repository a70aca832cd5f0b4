# The pi coding agent the agents run: on the gateway's PATH (gateway.nix,
# when the overlay provides it), its settings from this repository, and its
# credentials written from the API key files by `clawdinator host pi-auth`
# as the agents' user before the gateway starts.
{ config, lib, pkgs, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command harden noMetadata;
  inherit (lib) mkIf mkOption optional types;
  piDir = "${cfg.stateDir}/.pi/agent";
  keys = cfg.openaiApiKeyFile != null && cfg.anthropicApiKeyFile != null;
in
{
  options.services.clawdinator.pi = {
    enable = mkOption {
      type = types.bool;
      default = cfg.gateway.enable && pkgs ? pi-coding-agent;
      defaultText = lib.literalExpression "gateway.enable && pkgs ? pi-coding-agent";
      description = "The pi coding agent for the agents: the package, its settings, its credentials.";
    };
    settingsFile = mkOption {
      type = types.path;
      default = ../../../clawdinator/pi-settings.json;
      defaultText = lib.literalExpression "./clawdinator/pi-settings.json";
      description = "pi's settings (default provider, model, thinking level, enabled models).";
    };
  };

  config = mkIf (cfg.enable && cfg.pi.enable) {
    environment.etc."clawdinator/pi-settings.json".source = cfg.pi.settingsFile;
    systemd.tmpfiles.rules = [
      "d ${cfg.stateDir}/.pi 0750 ${cfg.user} ${cfg.group} - -"
      "d ${piDir} 0750 ${cfg.user} ${cfg.group} - -"
      "L+ ${piDir}/settings.json - - - - /etc/clawdinator/pi-settings.json"
    ];

    systemd.services.clawdinator-pi-auth = mkIf keys {
      description = "clawdinator: the pi coding agent's credentials from the API key files";
      wantedBy = [ "multi-user.target" ];
      after = [ "clawdinator-secrets.service" ];
      requires = [ "clawdinator-secrets.service" ];
      before = optional cfg.gateway.enable "clawdinator.service";
      serviceConfig = harden { rw = [ piDir ]; } // noMetadata // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.group;
        ExecStart = command [
          "host"
          "pi-auth"
          "--openai-key-file"
          cfg.openaiApiKeyFile
          "--anthropic-key-file"
          cfg.anthropicApiKeyFile
          "--out"
          "${piDir}/auth.json"
        ];
      };
    };
  };
}
