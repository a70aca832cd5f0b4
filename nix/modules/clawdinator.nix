# The clawdinator host: bootstrap from S3, secrets into /run/agenix,
# repository seeds, shared memory on EFS over TLS, GitHub App tokens, the
# gateway (through nix-openclaw's services.openclaw-gateway), and the first
# switch of a fresh instance to its own configuration.
#
# Every job is a command of this project's binary (`clawdinator`, the
# hostPackage); no unit runs a script. Per-instance facts (name, bucket,
# prefix, region, EFS id) are options when a configuration knows them and
# otherwise come at run time from /etc/clawdinator/, which the instance's
# user data writes: one image serves every instance and every account.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.clawdinator;
  inherit (lib) mkIf mkOption mkEnableOption types optional optionals concatStringsSep escapeShellArg literalExpression;

  etc = "/etc/clawdinator";
  bin = "${cfg.hostPackage}/bin/clawdinator";
  agenix = "/run/agenix";
  runDir = "/run/clawd";
  githubEnvFile = "${runDir}/github-app.env";
  workspaceDir = "${cfg.stateDir}/workspace";
  reposDir = "${cfg.stateDir}/repos";
  logDir = "${cfg.stateDir}/logs";
  configPath = "/etc/clawd/openclaw.json";
  deploymentRecord = "${cfg.stateDir}/deployment.json";

  # An ExecStart line from words, each quoted on its own: no value can split it.
  command = words: concatStringsSep " " (map escapeShellArg ([ bin ] ++ words));

  # A value the configuration gives, else the file user data wrote.
  given = value: flag: fileFlag: file: if value != null then [ flag value ] else [ fileFlag "${etc}/${file}" ];
  regionWords = region: given region "--region" "--region-file" "region";
  ownerWords = [ "--owner" cfg.user "--group" cfg.group ];

  # What every unit gets; `caps` are the capabilities a root unit keeps,
  # `rw` the only paths it may write.
  harden = { caps ? [ ], rw ? [ ] }: {
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ReadWritePaths = rw;
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    LockPersonality = true;
    SystemCallArchitectures = "native";
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    CapabilityBoundingSet = if caps == [ ] then [ "" ] else caps;
  };

  oneshot = {
    Type = "oneshot";
    RemainAfterExit = true;
  };

  secretsWords =
    if cfg.secretsSource == "bundle" then
      [ "secrets" "install" "--from" cfg.bootstrap.secretsDir "--identity" cfg.bootstrap.ageKeyPath "--dest" agenix ] ++ ownerWords
    else
      [ "secrets" "fetch" "--dest" agenix "--instances" "${../instances.json}" "--spec" "${../secrets.json}" ]
      ++ given cfg.instanceName "--instance" "--instance-file" "instance-name"
      ++ ownerWords ++ regionWords cfg.bootstrap.region;

  # The gateway's variables and the files that hold their values.
  tokenEnv = lib.filterAttrs (_: file: file != null) {
    DISCORD_BOT_TOKEN = cfg.discordTokenFile;
    ANTHROPIC_API_KEY = cfg.anthropicApiKeyFile;
    OPENAI_API_KEY = cfg.openaiApiKeyFile;
    TELEGRAM_BOT_TOKEN = cfg.telegramBotTokenFile;
  } // cfg.extraSecretEnv;

  toolsMd = pkgs.writeText "clawdinator-tools.md" ''
    ## Installed toolchain (from the NixOS module)

    ${concatStringsSep "\n" (map (p: "- ${p.name}") cfg.toolPackages)}
  '';

  gatewayExec = command (
    [ "host" "exec" ]
    ++ lib.concatMap (name: [ "--secret-env" "${name}=${tokenEnv.${name}}" ]) (lib.attrNames tokenEnv)
    ++ [ "--" "${cfg.package}/bin/openclaw" "gateway" "--port" (toString cfg.gatewayPort) ]
  );

  # Units the gateway starts after; `requires` those it cannot run without.
  gatewayAfter =
    optionals cfg.bootstrap.enable [ "clawdinator-bootstrap.service" "clawdinator-repo-seed.service" ]
    ++ [ "clawdinator-secrets.service" "clawdinator-memory-init.service" ]
    ++ optional cfg.githubApp.enable "clawdinator-github-app-token.service";

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
        [ "host" job "--flake" "${reposDir}/clawdinators" "--record" deploymentRecord ]
        ++ given cfg.instanceName "--instance" "--instance-file" "instance-name"
      );
    };
  };

  nullOrStr = description: mkOption { type = types.nullOr types.str; default = null; inherit description; };
  runTime = what: file: "${what}; null: read at run time from ${etc}/${file} (written by the instance's user data).";
in
{
  options.services.clawdinator = {
    enable = mkEnableOption "a clawdinator host (bootstrap, secrets, memory, gateway)";

    instanceName = nullOrStr (runTime "This host's instance name, a key of nix/instances.json" "instance-name");

    user = mkOption { type = types.str; default = "clawdinator"; description = "The user the gateway and the agents run as."; };
    group = mkOption { type = types.str; default = "clawdinator"; description = "The group of the gateway, the agents and shared memory."; };

    package = mkOption {
      type = types.package;
      default = pkgs.openclaw-gateway or pkgs.openclaw;
      defaultText = literalExpression "pkgs.openclaw-gateway";
      description = "The OpenClaw gateway (nix-openclaw's overlay provides it).";
    };

    hostPackage = mkOption {
      type = types.package;
      default = pkgs.clawdinator;
      defaultText = literalExpression "pkgs.clawdinator";
      description = "This project's host binary, `clawdinator`: every unit's command (this flake's overlay provides it).";
    };

    stateDir = mkOption { type = types.str; default = "/var/lib/clawd"; description = "The gateway's home: workspace, repositories, logs, bootstrap state."; };

    memoryDir = mkOption {
      type = types.str;
      default = if cfg.memoryEfs.enable then cfg.memoryEfs.mountPoint else "${cfg.stateDir}/memory";
      defaultText = literalExpression ''memoryEfs.mountPoint when memoryEfs.enable, else "''${stateDir}/memory"'';
      description = "Shared memory (the agents' `clawdinator memory` root).";
    };

    memoryEfs = {
      enable = mkEnableOption "shared memory on EFS, NFS over TLS through stunnel";
      fileSystemId = nullOrStr (runTime "The EFS file system id (fs-…)" "efs-id");
      region = nullOrStr (runTime "The EFS file system's region" "region");
      mountPoint = mkOption { type = types.str; default = "/memory"; description = "Where the file system is mounted."; };
    };

    bootstrap = {
      enable = mkEnableOption "fetching this instance's bundle from S3 at boot (clawdinator-bootstrap.service)";
      s3Bucket = nullOrStr (runTime "The bucket holding the bundles" "bucket");
      s3Prefix = nullOrStr (runTime "This instance's bundle prefix (bootstrap/<name>)" "bootstrap-prefix");
      region = nullOrStr (runTime "The bucket's region" "region");
      secretsDir = mkOption { type = types.str; default = "${cfg.stateDir}/nix-secrets"; defaultText = literalExpression ''"''${stateDir}/nix-secrets"''; description = "The bundle's age files (a link into the bundle's current generation)."; };
      repoSeedsDir = mkOption { type = types.str; default = "${cfg.stateDir}/repo-seeds"; defaultText = literalExpression ''"''${stateDir}/repo-seeds"''; description = "The bundle's repository seeds (a link into the current generation)."; };
      ageKeyPath = mkOption { type = types.str; default = "/etc/agenix/keys/clawdinator.agekey"; description = "The fleet's age identity from the bundle (a link into the current generation)."; };
    };

    secretsSource = mkOption {
      type = types.enum [ "bundle" "secretsmanager" ];
      default = "bundle";
      description = ''
        Where /run/agenix comes from: `bundle` decrypts the bundle's age files
        (`clawdinator secrets install`); `secretsmanager` reads this
        instance's secrets from AWS Secrets Manager (`clawdinator secrets fetch`).
      '';
    };

    discordTokenFile = nullOrStr "File holding this instance's Discord bot token (DISCORD_BOT_TOKEN).";
    anthropicApiKeyFile = nullOrStr "File holding the Anthropic API key (ANTHROPIC_API_KEY).";
    openaiApiKeyFile = nullOrStr "File holding the OpenAI API key (OPENAI_API_KEY).";
    telegramBotTokenFile = nullOrStr "File holding the Telegram bot token (TELEGRAM_BOT_TOKEN).";
    extraSecretEnv = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { CLAWDINATOR_TELEGRAM_ALLOW_FROM = "/run/agenix/clawdinator-telegram-allow-from"; };
      description = "More gateway variables read from files: NAME = file.";
    };

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

    selfUpdate = {
      enable = mkEnableOption "pulling the repository copy and switching on a timer (off: deploys are pinned revisions)";
      schedule = mkOption { type = types.str; default = "daily"; description = "When to update (systemd OnCalendar)."; };
    };

    firstSwitch.enable = mkEnableOption ''
      the first switch of a fresh instance to nixosConfigurations.<instance>
      from its repository copy; never runs on a host with a recorded deployment
      (the image enables it)'';

    gateway.enable = mkOption { type = types.bool; default = true; description = "Run the gateway (the image, which knows no instance, turns it off)."; };

    gatewayPort = mkOption { type = types.port; default = 18789; description = "The gateway's port (loopback)."; };

    config = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "Free-form gateway configuration (OpenClaw JSON), merged with the module's defaults.";
    };

    workspaceTemplateDir = mkOption {
      type = types.path;
      default = ../../clawdinator/workspace;
      defaultText = literalExpression "./clawdinator/workspace";
      description = "The agent workspace templates, installed before every gateway start.";
    };

    cronJobsFile = mkOption {
      type = types.nullOr types.path;
      default = ../../clawdinator/cron-jobs.json;
      defaultText = literalExpression "./clawdinator/cron-jobs.json";
      description = "The gateway's cron jobs, installed as its cron store before every start.";
    };

    memoryTemplateDir = mkOption {
      type = types.path;
      default = ../../memory;
      defaultText = literalExpression "./memory";
      description = "Shared memory templates; each one memory lacks is added at boot.";
    };

    toolPackages = mkOption {
      type = types.listOf types.package;
      default = with pkgs; [ git gh jq ripgrep curl ];
      defaultText = literalExpression "with pkgs; [ git gh jq ripgrep curl ]";
      description = "The agents' tools, on the gateway's PATH and listed in TOOLS.md.";
    };

    ssh = {
      enable = mkEnableOption "SSH (off: SSM Session Manager is the way in)";
      authorizedKeys = mkOption { type = types.listOf types.str; default = [ ]; description = "Keys allowed to log in as root when ssh.enable."; };
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
      {
        assertion = !cfg.githubApp.enable || (cfg.githubApp.appId != "" && cfg.githubApp.installationId != "");
        message = "services.clawdinator.githubApp.enable needs githubApp.appId and githubApp.installationId (the App's settings page and its installation URL show both).";
      }
      {
        assertion = cfg.memoryEfs.fileSystemId == null || builtins.match "fs-[0-9a-f]{8,40}" cfg.memoryEfs.fileSystemId != null;
        message = "services.clawdinator.memoryEfs.fileSystemId \"${toString cfg.memoryEfs.fileSystemId}\" is not an EFS id (fs- then hex digits); leave it null to read ${etc}/efs-id at boot.";
      }
      {
        assertion = cfg.secretsSource != "bundle" || cfg.bootstrap.enable;
        message = "services.clawdinator.secretsSource = \"bundle\" decrypts the bootstrap bundle's age files: set services.clawdinator.bootstrap.enable = true, or secretsSource = \"secretsmanager\".";
      }
      {
        assertion = !cfg.firstSwitch.enable || cfg.bootstrap.enable;
        message = "services.clawdinator.firstSwitch.enable switches to the repository copy the bundle brings: set services.clawdinator.bootstrap.enable = true.";
      }
      {
        assertion = !cfg.ssh.enable || cfg.ssh.authorizedKeys != [ ];
        message = "services.clawdinator.ssh.enable without ssh.authorizedKeys lets nobody in: add a key, or leave SSH off and use SSM Session Manager.";
      }
    ];

    users.groups.${cfg.group} = { };
    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.group;
      home = cfg.stateDir;
      createHome = true;
      shell = pkgs.bashInteractive;
    };

    # `host switch` checks the running system is the revision it deployed.
    system.systemBuilderCommands = lib.optionalString (config.system.configurationRevision != null) ''
      printf '%s' ${escapeShellArg config.system.configurationRevision} > $out/configurationRevision
    '';

    # The host binary for operators and agents: `clawdinator memory …` and friends.
    environment.systemPackages = [ cfg.hostPackage ];
    environment.etc."clawd/tools.md".source = toolsMd;

    # SSM Session Manager is the way in; SSH only when asked for, with keys.
    services.amazon-ssm-agent.enable = true;
    services.openssh.enable = cfg.ssh.enable;
    services.openssh.settings.PermitRootLogin = "prohibit-password";
    services.openssh.settings.PasswordAuthentication = false;
    users.users.root.openssh.authorizedKeys.keys = cfg.ssh.authorizedKeys;

    systemd.tmpfiles.rules = [
      "d ${cfg.stateDir} 0750 ${cfg.user} ${cfg.group} - -"
      "d ${reposDir} 0750 ${cfg.user} ${cfg.group} - -"
      "d ${logDir} 0750 ${cfg.user} ${cfg.group} - -"
      "d ${runDir} 0750 ${cfg.user} ${cfg.group} - -"
      "d ${agenix} 0711 root root - -"
      "d ${cfg.stateDir}/bootstrap 0700 root root - -"
      "d ${builtins.dirOf cfg.bootstrap.ageKeyPath} 0700 root root - -"
    ] ++ optional (!cfg.memoryEfs.enable) "d ${cfg.memoryDir} 2770 ${cfg.user} ${cfg.group} - -";

    systemd.services.clawdinator-bootstrap = mkIf cfg.bootstrap.enable {
      description = "clawdinator: fetch this instance's bundle (secrets, repository seeds) from S3";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      # amazon-init runs user data, which writes ${etc}/ on first boot.
      after = [ "network-online.target" "amazon-init.service" ];
      serviceConfig = oneshot // harden {
        # Root writing links into the service user's state directory.
        caps = [ "CAP_DAC_OVERRIDE" ];
        rw = lib.unique [ cfg.stateDir (builtins.dirOf cfg.bootstrap.secretsDir) (builtins.dirOf cfg.bootstrap.repoSeedsDir) (builtins.dirOf cfg.bootstrap.ageKeyPath) ];
      } // {
        ExecStart = command (
          [ "bootstrap" "fetch" ]
          ++ given cfg.bootstrap.s3Bucket "--bucket" "--bucket-file" "bucket"
          ++ given cfg.bootstrap.s3Prefix "--prefix" "--prefix-file" "bootstrap-prefix"
          ++ [
            "--secrets-dir" cfg.bootstrap.secretsDir
            "--repo-seeds-dir" cfg.bootstrap.repoSeedsDir
            "--age-key-path" cfg.bootstrap.ageKeyPath
            "--state-dir" "${cfg.stateDir}/bootstrap"
          ]
          ++ regionWords cfg.bootstrap.region
        );
      };
    };

    systemd.services.clawdinator-secrets = {
      description = "clawdinator: this instance's secrets into ${agenix} (${cfg.secretsSource})";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "amazon-init.service" ] ++ optional cfg.bootstrap.enable "clawdinator-bootstrap.service";
      requires = optional (cfg.secretsSource == "bundle") "clawdinator-bootstrap.service";
      serviceConfig = oneshot // harden {
        # Files owned by the service user, in a root directory.
        caps = [ "CAP_CHOWN" "CAP_DAC_OVERRIDE" ];
        rw = [ agenix ];
      } // {
        ExecStart = command secretsWords;
      };
    };

    systemd.services.clawdinator-repo-seed = mkIf cfg.bootstrap.enable {
      description = "clawdinator: copy each repository the host lacks from the bundle's seeds into ${reposDir}";
      wantedBy = [ "multi-user.target" ];
      after = [ "clawdinator-bootstrap.service" ];
      requires = [ "clawdinator-bootstrap.service" ];
      serviceConfig = oneshot // harden {
        caps = [ "CAP_CHOWN" "CAP_DAC_OVERRIDE" "CAP_FOWNER" ];
        rw = [ reposDir ];
      } // {
        ExecStart = command ([ "seeds" "install" "--from" cfg.bootstrap.repoSeedsDir "--dest" reposDir ] ++ ownerWords);
      };
    };

    systemd.services.clawdinator-first-switch = mkIf cfg.firstSwitch.enable ({
      description = "clawdinator: switch a fresh instance to its own configuration, once";
      wantedBy = [ "multi-user.target" ];
      after = [ "clawdinator-repo-seed.service" "clawdinator-secrets.service" ];
      requires = [ "clawdinator-repo-seed.service" ];
      unitConfig.ConditionPathExists = "!${deploymentRecord}";
    } // systemSwitch "first-switch");

    systemd.services.clawdinator-efs-stunnel = mkIf cfg.memoryEfs.enable {
      description = "clawdinator: TLS tunnel carrying NFS to the fleet's EFS";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "amazon-init.service" ];
      serviceConfig = harden { rw = [ ]; } // {
        DynamicUser = true;
        RuntimeDirectory = "clawdinator-efs";
        ExecStartPre = command (
          [ "host" "efs-stunnel-config" "--out" "/run/clawdinator-efs/stunnel.conf" "--ca-file" "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt" ]
          ++ given cfg.memoryEfs.fileSystemId "--file-system-id" "--file-system-id-file" "efs-id"
          ++ regionWords cfg.memoryEfs.region
        );
        ExecStart = "${pkgs.stunnel}/bin/stunnel /run/clawdinator-efs/stunnel.conf";
        Restart = "always";
        RestartSec = 5;
      };
    };

    fileSystems = mkIf cfg.memoryEfs.enable {
      ${cfg.memoryEfs.mountPoint} = {
        device = "127.0.0.1:/";
        fsType = "nfs4";
        options = [
          "nfsvers=4.1"
          "rsize=1048576"
          "wsize=1048576"
          "hard"
          "timeo=600"
          "retrans=2"
          "noresvport"
          "_netdev"
          "x-systemd.requires=clawdinator-efs-stunnel.service"
          "x-systemd.after=clawdinator-efs-stunnel.service"
        ];
      };
    };

    systemd.services.clawdinator-memory-init = {
      description = "clawdinator: shared memory directories and templates in ${cfg.memoryDir}";
      wantedBy = [ "multi-user.target" ];
      unitConfig.RequiresMountsFor = [ cfg.memoryDir ];
      serviceConfig = oneshot // harden {
        caps = [ "CAP_CHOWN" "CAP_DAC_OVERRIDE" "CAP_FOWNER" "CAP_FSETID" ];
        rw = [ cfg.memoryDir ];
      } // {
        ExecStart = command ([ "memory" "init" "--root" cfg.memoryDir "--templates" "${cfg.memoryTemplateDir}" ] ++ ownerWords);
      };
    };

    systemd.services.clawdinator-github-app-token = mkIf cfg.githubApp.enable {
      description = "clawdinator: a fresh GitHub App installation token in ${githubEnvFile}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "clawdinator-secrets.service" ];
      before = optional cfg.gateway.enable "clawdinator.service";
      serviceConfig = harden { rw = [ runDir ]; } // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.group;
        ExecStart = command [
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
      serviceConfig = harden { rw = [ cfg.memoryDir ]; } // {
        Type = "oneshot";
        User = cfg.user;
        Group = cfg.group;
        EnvironmentFile = optional cfg.githubApp.enable githubEnvFile;
        ExecStart = command [ "github-sync" "--org" cfg.githubSync.org "--root" cfg.memoryDir ];
      };
    };

    systemd.timers.clawdinator-github-sync = mkIf cfg.githubSync.enable {
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.githubSync.schedule;
        Persistent = true;
      };
    };

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
      logPath = "${logDir}/gateway.log";
      config = lib.recursiveUpdate {
        gateway = { mode = "local"; bind = "loopback"; port = cfg.gatewayPort; };
        agents.defaults.workspace = workspaceDir;
        cron = { enabled = cfg.cronJobsFile != null; store = "${cfg.stateDir}/cron-jobs.json"; };
        logging.file = "${logDir}/openclaw.log";
      } cfg.config;
      environment = {
        CLAWDINATOR_MEMORY_DIR = cfg.memoryDir;
        OPENCLAW_WORKSPACE_DIR = workspaceDir;
      };
      servicePath = [ cfg.hostPackage ] ++ cfg.toolPackages;
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
      # No tokens, no gateway: it would only crash-loop.
      requires = [ "clawdinator-secrets.service" ];
      unitConfig.RequiresMountsFor = [ cfg.memoryDir ];
      # The agents run git, gh and builds: no capabilities and a read-only
      # system, but JIT and child processes stay allowed.
      serviceConfig = harden { rw = [ cfg.stateDir cfg.memoryDir runDir ]; };
    };
  };
}
