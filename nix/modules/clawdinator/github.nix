# GitHub: the bots' App installation tokens, minted on a timer by root
# (the App key is root's alone in /run/agenix) with the repositories and
# permissions the agents need named in the request, into an env file the
# agents' user reads; and the snapshot of the organisation's open pull
# requests and issues into shared memory. The bots' App is never the one
# that dispatches deploys (that App's key is only in Secrets Manager, for
# the control API): a bot's token can neither run nor change workflows,
# nor write this fleet's own repository.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg agenix githubEnvFile ghConfigDir command harden noMetadata ownerWords runDir reposDir;
  inherit (lib) mkEnableOption mkIf mkOption optional types;
  # The GitHub repositories a flake.lock pins: whoever writes one of them
  # writes what the fleet builds at its next pin bump.
  lockedRepositories = lockFile:
    let nodes = builtins.attrValues (builtins.fromJSON (builtins.readFile lockFile)).nodes; in
    lib.unique (lib.concatMap (n: optional ((n.locked.type or "") == "github") "${n.locked.owner}/${n.locked.repo}") nodes);
  repoName = r: lib.toLower (lib.last (lib.splitString "/" r));
  writableLocked = lib.filter (r: builtins.elem (repoName r) (map repoName cfg.githubApp.lockedRepositories)) cfg.githubApp.repositories;
  # The permissions a token may have, each up to its level: the one list
  # `clawdinator secrets github-token` also enforces.
  allowedPermissions = builtins.fromJSON (builtins.readFile ../../../clawdinator/github-permissions.json);
  notAllowed = lib.filter
    (n: !(allowedPermissions ? ${n}) || (allowedPermissions.${n} == "read" && cfg.githubApp.permissions.${n} == "write"))
    (builtins.attrNames cfg.githubApp.permissions);
in
{
  options.services.clawdinator = {
    githubApp = {
      enable = mkEnableOption "GitHub App installation tokens in ${githubEnvFile} (clawdinator-github-app-token)";
      appId = mkOption { type = types.str; default = ""; description = "The GitHub App's id."; };
      installationId = mkOption { type = types.str; default = ""; description = "The App's installation id for the organisation."; };
      privateKeyFile = mkOption { type = types.str; default = "${agenix}/clawdinator-github-app.pem"; description = "The App's private key (PEM), root's alone (the secrets unit installs it with --root-only)."; };
      repositories = mkOption {
        type = types.listOf types.str;
        default = [ "openclaw" "clawhub" "ClawKeeper" ];
        description = "The only repositories of the installation a token covers (while contents is write: never ${cfg.githubApp.fleetRepository}, nor a repository flake.lock pins).";
      };
      lockedRepositories = mkOption {
        type = types.listOf types.str;
        default = lockedRepositories ../../../flake.lock;
        defaultText = lib.literalMD "every `github` node of the fleet's `flake.lock`, as owner/repo";
        description = "Repositories the fleet's flake.lock pins: a bot token never writes them (a write there is built by the next pin bump).";
      };
      permissions = mkOption {
        type = types.attrsOf (types.enum [ "read" "write" ]);
        default = { contents = "write"; issues = "write"; pull_requests = "write"; };
        description = "The permissions a token gets (GitHub narrows the App's grant to these); only those on the allow-list clawdinator/github-permissions.json, each up to its level.";
      };
      fleetRepository = mkOption { type = types.str; default = "clawdinators"; description = "This fleet's own repository: no bot token may write it."; };
      schedule = mkOption { type = types.str; default = "45min"; description = "Time between refreshes (a systemd time span); tokens live an hour."; };
    };

    git = {
      userName = mkOption { type = types.str; default = "CLAWDINATOR Bot"; description = "The agents' git author name."; };
      userEmail = mkOption { type = types.str; default = "clawdinator[bot]@users.noreply.github.com"; description = "The agents' git author email."; };
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
      {
        assertion = notAllowed == [ ];
        message = "services.clawdinator.githubApp.permissions: ${lib.concatStringsSep ", " notAllowed} not on the allow-list (or above its level) of clawdinator/github-permissions.json; a bot token never gets actions, workflows, administration, environments, variables, secrets or hooks.";
      }
      {
        assertion = (cfg.githubApp.permissions.contents or "") != "write"
          || (cfg.githubApp.repositories != [ ] && !(builtins.elem (repoName cfg.githubApp.fleetRepository) (map repoName cfg.githubApp.repositories)));
        message = "services.clawdinator.githubApp: contents = write needs githubApp.repositories listed, without ${cfg.githubApp.fleetRepository} (this fleet's own repository).";
      }
      {
        assertion = (cfg.githubApp.permissions.contents or "") != "write" || writableLocked == [ ];
        message = "services.clawdinator.githubApp: contents = write on ${lib.concatStringsSep ", " writableLocked}, which flake.lock pins: a bot could change what the fleet builds; drop them from githubApp.repositories.";
      }
    ];

    # The agents' git: a bot identity, the seeded clones trusted, and the
    # App token (refreshed every run of the token unit) for github.com,
    # read from its file on every call rather than fixed in an environment.
    programs.git = {
      enable = true;
      config = {
        user = {
          name = cfg.git.userName;
          email = cfg.git.userEmail;
        };
        safe.directory = [ "${reposDir}/*" ];
      } // lib.optionalAttrs cfg.githubApp.enable {
        credential."https://github.com".helper = "!f() { test \"$1\" = get && echo username=x-access-token && echo password=$(cat ${ghConfigDir}/token); }; f";
      };
    };

    systemd.services.clawdinator-github-app-token = mkIf cfg.githubApp.enable {
      description = "clawdinator: a fresh GitHub App installation token in ${githubEnvFile}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "clawdinator-secrets.service" ];
      before = optional cfg.gateway.enable "clawdinator.service";
      # Root reads the key; the agents' user gets only the token file.
      serviceConfig = harden { caps = [ "CAP_CHOWN" ]; rw = [ runDir ]; } // noMetadata // {
        Type = "oneshot";
        ExecStart = command ([
          "secrets"
          "github-token"
          "--app-id" cfg.githubApp.appId
          "--installation-id" cfg.githubApp.installationId
          "--pem" cfg.githubApp.privateKeyFile
          "--env-file" githubEnvFile
          "--gh-config-dir" ghConfigDir
          "--fleet-repository" cfg.githubApp.fleetRepository
        ]
        ++ lib.concatMap (r: [ "--repository" r ]) cfg.githubApp.repositories
        ++ lib.concatLists (lib.mapAttrsToList (name: level: [ "--permission" "${name}=${level}" ]) cfg.githubApp.permissions)
        ++ ownerWords);
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
