# The gateway: nix-openclaw's unit, named `clawdinator`, started through
# `clawdinator host exec` so that its tokens reach it only in memory; its
# workspace and cron store installed before every start; the agents' tools.
{ config, lib, pkgs, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command configPath harden noMetadata controlSocket ghConfigDir runDir workspaceDir logDir;
  inherit (lib) concatStringsSep literalExpression mkIf mkOption optional optionals types;
  # The gateway's variables and the files that hold their values.
  tokenEnv = lib.filterAttrs (_: file: file != null)
    {
      DISCORD_BOT_TOKEN = cfg.discordTokenFile;
      ANTHROPIC_API_KEY = cfg.anthropicApiKeyFile;
      OPENAI_API_KEY = cfg.openaiApiKeyFile;
      TELEGRAM_BOT_TOKEN = cfg.telegramBotTokenFile;
    } // cfg.extraSecretEnv;

  # The agents' tools, and pi when the overlay provides it (pi.nix).
  tools = cfg.toolPackages ++ optional (cfg.pi.enable && pkgs ? pi-coding-agent) pkgs.pi-coding-agent;

  toolsMd = pkgs.writeText "clawdinator-tools.md" ''
    ## Installed toolchain (from the NixOS module)

    ${concatStringsSep "\n" (map (p: "- ${p.name}") tools)}
  '';

  gatewayExec = command (
    [ "host" "exec" ]
    ++ lib.concatMap (name: [ "--secret-env" "${name}=${tokenEnv.${name}}" ]) (lib.attrNames tokenEnv)
    ++ [ "--" "${cfg.package}/bin/openclaw" "gateway" "--port" (toString cfg.gatewayPort) ]
  );

  # Units the gateway starts after; `requires` those it cannot run without.
  gatewayAfter =
    optionals cfg.bootstrap.enable [ "clawdinator-bootstrap.service" "clawdinator-repo-seed.service" ]
    ++ [ "firewall.service" "clawdinator-secrets.service" "clawdinator-memory-init.service" ]
    ++ optional cfg.githubApp.enable "clawdinator-github-app-token.service";
in
{
  options.services.clawdinator = {
    package = mkOption {
      type = types.package;
      default = pkgs.openclaw-gateway or pkgs.openclaw;
      defaultText = literalExpression "pkgs.openclaw-gateway";
      description = "The OpenClaw gateway (nix-openclaw's overlay provides it).";
    };

    gateway.enable = mkOption { type = types.bool; default = true; description = "Run the gateway (the image, which knows no instance, turns it off)."; };

    gatewayPort = mkOption { type = types.port; default = 18789; description = "The gateway's port (loopback)."; };

    config = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "Free-form gateway configuration (OpenClaw JSON), merged with the module's defaults.";
    };

    workspaceDir = mkOption {
      type = types.externalPath;
      default = "${cfg.stateDir}/workspace";
      defaultText = literalExpression ''"''${stateDir}/workspace"'';
      description = "The agents' workspace (the gateway's agents.defaults.workspace), seeded from workspaceTemplateDir before every start.";
    };

    workspaceTemplateDir = mkOption {
      type = types.path;
      default = ../../../clawdinator/workspace;
      defaultText = literalExpression "./clawdinator/workspace";
      description = "The agent workspace templates, installed before every gateway start.";
    };

    cronJobsFile = mkOption {
      type = types.nullOr types.path;
      default = ../../../clawdinator/cron-jobs.json;
      defaultText = literalExpression "./clawdinator/cron-jobs.json";
      description = "The gateway's cron jobs, installed as its cron store before every start.";
    };

    # zstd, util-linux (flock: serialised edits of shared memory) and rsync
    # as the agents had them; no AWS CLI: the agents hold no AWS
    # credentials, and no skill calls it.
    toolPackages = mkOption {
      type = types.listOf types.package;
      default = with pkgs; [ git gh jq ripgrep curl nodejs_22 pnpm_10 python3 ffmpeg zstd util-linux rsync ];
      defaultText = literalExpression "with pkgs; [ git gh jq ripgrep curl nodejs_22 pnpm_10 python3 ffmpeg zstd util-linux rsync ]";
      description = "The agents' tools, on the gateway's PATH and listed in TOOLS.md.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = (pkgs ? openclaw-gateway) || (pkgs ? openclaw) || !cfg.gateway.enable;
        message = "services.clawdinator.package: pkgs has no openclaw-gateway; add nix-openclaw's overlay (nix-openclaw.overlays.default) to nixpkgs.overlays, or set services.clawdinator.package.";
      }
      {
        assertion = !cfg.gateway.enable || cfg.discordTokenFile != null;
        message = "services.clawdinator.discordTokenFile is not set: the gateway needs this instance's Discord token (the fleet hosts set it from nix/instances.json's discordTokenSecret), or set services.clawdinator.gateway.enable = false.";
      }
    ];

    environment.etc."clawd/tools.md".source = toolsMd;

    # Operators in an SSM session get the `openclaw` CLI (status, logs,
    # channels) beside `clawdinator`; it is the gateway's own package, so
    # the closure does not grow.
    environment.systemPackages = optional cfg.gateway.enable cfg.package;

    # The gateway itself is nix-openclaw's unit, named `clawdinator`.
    services.openclaw-gateway = mkIf cfg.gateway.enable {
      enable = true;
      unitName = "clawdinator";
      package = cfg.package;
      port = cfg.gatewayPort;
      user = cfg.user;
      group = cfg.group;
      createUser = false;
      stateDir = cfg.stateDir;
      workingDirectory = cfg.stateDir;
      inherit configPath;
      # nix-openclaw's unit appends stdout and stderr to this file; the
      # unit below sends them to the journal instead, where `fleet logs`
      # (journalctl -u clawdinator) reads them. Kept: the option needs a path.
      logPath = "${logDir}/gateway.log";
      config = lib.recursiveUpdate
        {
          gateway = { mode = "local"; bind = "loopback"; port = cfg.gatewayPort; };
          agents.defaults.workspace = workspaceDir;
          cron = { enabled = cfg.cronJobsFile != null; store = "${cfg.stateDir}/cron-jobs.json"; };
          # The gateway's console (what reaches the journal): plain lines at
          # info; its JSON-lines file stays for `openclaw logs`.
          logging = { file = "${logDir}/openclaw.log"; consoleLevel = "info"; consoleStyle = "compact"; };
        }
        cfg.config;
      environment = {
        CLAWDINATOR_MEMORY_DIR = cfg.memoryDir;
        OPENCLAW_WORKSPACE_DIR = workspaceDir;
      } // lib.optionalAttrs cfg.githubApp.enable {
        # gh reads the token unit's hosts.yml on every call (a refresh reaches the running gateway).
        GH_CONFIG_DIR = ghConfigDir;
      } // lib.optionalAttrs cfg.controlHelper.enable {
        # `clawdinator fleet control` asks the helper: the agents hold no credentials.
        CLAWDINATOR_CONTROL_SOCKET = controlSocket;
      };
      servicePath = [ cfg.hostPackage ] ++ tools;
      execStartPre = [
        (command (
          [ "host" "workspace-seed" "--templates" "${cfg.workspaceTemplateDir}" "--dest" workspaceDir "--tools-extra" "/etc/clawd/tools.md" ]
          ++ optionals (cfg.cronJobsFile != null) [ "--cron-jobs" "${cfg.cronJobsFile}" "--cron-store" "${cfg.stateDir}/cron-jobs.json" ]
        ))
      ];
      execStart = gatewayExec;
    };

    systemd.services.clawdinator = mkIf cfg.gateway.enable {
      after = gatewayAfter;
      wants = gatewayAfter;
      # No tokens, no gateway: it would only crash-loop. No firewall, no
      # gateway either: the firewall is what refuses the metadata service to
      # every process the agents can start outside their unit.
      requires = [ "clawdinator-secrets.service" "firewall.service" ];
      unitConfig.RequiresMountsFor = [ cfg.memoryDir ];
      # The agents run git, gh and builds: no capabilities and a read-only
      # system, but JIT and child processes stay allowed; never the metadata service.
      serviceConfig = harden { rw = [ cfg.stateDir cfg.memoryDir runDir ]; } // noMetadata // {
        # The gateway's output in the journal, not in a file beside it:
        # `fleet logs NAME` reads the unit's journal (ssm/logs.json).
        StandardOutput = lib.mkForce "journal";
        StandardError = lib.mkForce "journal";
      };
    };
  };
}
