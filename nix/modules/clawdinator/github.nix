# GitHub: the bots' App installation tokens, minted on a timer by root
# (the App key is root's alone in /run/agenix) with the repositories and
# permissions the agents need named in the request, into an env file the
# agents' user reads; a second token, narrowed to proposing changes to the
# fleet (issues on its own repository, nothing it can push), in its own gh
# configuration; and the snapshot of the organisation's open pull requests
# and issues into shared memory every 15 minutes. The bots' App is never the one
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
  # The proposals token: issues on the fleet's repository and nothing that
  # writes anything else there (no push, no pull request, no check).
  proposals = cfg.githubApp.proposals;
  proposalsOn = cfg.githubApp.enable && proposals.enable;
  proposalsGhConfigDir = "${runDir}/gh-proposals";
  proposalsEnvFile = "${runDir}/github-proposals.env";
  proposalWrites = lib.filter (n: n != "issues" && proposals.permissions.${n} == "write") (builtins.attrNames proposals.permissions);
  proposalUnlisted = lib.filter (n: !(allowedPermissions ? ${n})) (builtins.attrNames proposals.permissions);
  mintWords = { envFile, configDir, repositories, permissions }: [
    "secrets"
    "github-token"
    "--app-id"
    cfg.githubApp.appId
    "--installation-id"
    cfg.githubApp.installationId
    "--pem"
    cfg.githubApp.privateKeyFile
    "--env-file"
    envFile
    "--gh-config-dir"
    configDir
    "--fleet-repository"
    cfg.githubApp.fleetRepository
  ]
  ++ lib.concatMap (r: [ "--repository" r ]) repositories
  ++ lib.concatLists (lib.mapAttrsToList (name: level: [ "--permission" "${name}=${level}" ]) permissions)
  ++ ownerWords;
  # A root oneshot that mints one narrowed token into its own files, and
  # the timer that renews it on the App token's schedule.
  tokenService = { description, envFile, configDir, repositories, permissions }: {
    inherit description;
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    after = [ "network-online.target" "clawdinator-secrets.service" ];
    before = optional cfg.gateway.enable "clawdinator.service";
    serviceConfig = harden { caps = [ "CAP_CHOWN" ]; rw = [ runDir ]; } // noMetadata // {
      Type = "oneshot";
      ExecStart = command (mintWords { inherit envFile configDir repositories permissions; });
    };
  };
  tokenTimer = description: {
    inherit description;
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnActiveSec = "0";
      OnUnitActiveSec = cfg.githubApp.schedule;
    };
  };
in
{
  options.services.clawdinator = {
    githubApp = {
      enable = mkEnableOption "GitHub App installation tokens in ${githubEnvFile} (clawdinator-github-app-token)";
      appId = mkOption { type = types.str; default = ""; description = "The GitHub App's id."; };
      installationId = mkOption { type = types.str; default = ""; description = "The App's installation id for the organisation."; };
      privateKeyFile = mkOption { type = types.externalPath; default = "${agenix}/clawdinator-github-app.pem"; description = "The App's private key (PEM), root's alone (the secrets unit installs it with --root-only)."; };
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
      proposals = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = "A second token, minted with the first, for proposing changes to the fleet: issues on ${cfg.githubApp.fleetRepository} only, in ${proposalsGhConfigDir} (the gateway's CLAWDINATOR_PROPOSALS_GH_CONFIG_DIR). It can open an issue; it can never push, open a pull request or touch a workflow.";
        };
        permissions = mkOption {
          type = types.attrsOf (types.enum [ "read" "write" ]);
          default = { issues = "write"; contents = "read"; };
          description = "The proposals token's permissions on the fleet's repository: only issues may be write (the module refuses any other write, contents and pull_requests first).";
        };
      };
    };

    git = {
      userName = mkOption { type = types.str; default = "CLAWDINATOR Bot"; description = "The agents' git author name."; };
      userEmail = mkOption { type = types.str; default = "clawdinator[bot]@users.noreply.github.com"; description = "The agents' git author email."; };
    };

    githubSync = {
      enable = mkEnableOption "the GitHub snapshot (open pull requests and issues of `org`, every 15 minutes) into shared memory";
      org = mkOption { type = types.str; default = "openclaw"; description = "The GitHub organisation to snapshot."; };
      schedule = mkOption { type = types.str; default = "*:0/15"; description = "When to snapshot (systemd OnCalendar); triage calls a snapshot older than two runs stale."; };
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
        message = "services.clawdinator.githubApp.permissions: ${lib.concatStringsSep ", " notAllowed} not on the allow-list (or above its level) of clawdinator/github-permissions.json; a bot token never gets actions or workflows (running or changing them is deploying), administration, environments, variables, secrets or hooks.";
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
      {
        assertion = !proposalsOn || (proposalWrites == [ ] && proposalUnlisted == [ ] && proposals.permissions != { });
        message = "services.clawdinator.githubApp.proposals.permissions: ${lib.concatStringsSep ", " (proposalWrites ++ proposalUnlisted)} refused: the proposals token covers ${cfg.githubApp.fleetRepository} and may write only issues (never contents or pull_requests: a bot proposes, it never pushes), each permission on clawdinator/github-permissions.json.";
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

    # Root reads the key; the agents' user gets only the token file.
    systemd.services.clawdinator-github-app-token = mkIf cfg.githubApp.enable (tokenService {
      description = "clawdinator: a fresh GitHub App installation token in ${githubEnvFile}";
      envFile = githubEnvFile;
      configDir = ghConfigDir;
      inherit (cfg.githubApp) repositories permissions;
    });
    systemd.timers.clawdinator-github-app-token = mkIf cfg.githubApp.enable
      (tokenTimer "clawdinator: refresh the GitHub App token every ${cfg.githubApp.schedule}");

    # The proposals token: the same key, the same schedule, its own unit (a
    # failure here never holds back the agents' own token) and its own files.
    systemd.services.clawdinator-github-proposals-token = mkIf proposalsOn (tokenService {
      description = "clawdinator: a GitHub App token that may only open issues on ${cfg.githubApp.fleetRepository}, in ${proposalsGhConfigDir}";
      envFile = proposalsEnvFile;
      configDir = proposalsGhConfigDir;
      repositories = [ cfg.githubApp.fleetRepository ];
      inherit (proposals) permissions;
    });
    systemd.timers.clawdinator-github-proposals-token = mkIf proposalsOn
      (tokenTimer "clawdinator: refresh the proposals token every ${cfg.githubApp.schedule}");

    # gh reads the proposals token from here when a bot files a proposal
    # (GH_CONFIG_DIR="$CLAWDINATOR_PROPOSALS_GH_CONFIG_DIR" gh issue create …).
    services.openclaw-gateway.environment = mkIf (proposalsOn && cfg.gateway.enable) {
      CLAWDINATOR_PROPOSALS_GH_CONFIG_DIR = proposalsGhConfigDir;
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
        # A run never outlasts its period (rate limits end it rather than wait long).
        TimeoutStartSec = "10min";
      };
    };

    systemd.timers.clawdinator-github-sync = mkIf cfg.githubSync.enable {
      wantedBy = [ "timers.target" ];
      # Persistent: a run missed while the host was down happens at boot;
      # a minute of jitter keeps the fleet's hosts off GitHub's same second.
      timerConfig = {
        OnCalendar = cfg.githubSync.schedule;
        Persistent = true;
        RandomizedDelaySec = "60s";
      };
    };
  };
}
