# Helpers every concern of the module shares: the host's paths, how a unit
# runs the host binary, the sandbox, and the facts user data writes.
{ config, lib }:

let
  cfg = config.services.clawdinator;
  inherit (lib) concatStringsSep escapeShellArg mkOption types;
  etc = "/etc/clawdinator";
in
rec {
  inherit cfg etc;
  bin = "${cfg.hostPackage}/bin/clawdinator";
  agenix = "/run/agenix";
  runDir = "/run/clawd";
  githubEnvFile = "${runDir}/github-app.env";
  # gh's configuration (hosts.yml) and the bare token for git, refreshed by the token unit.
  ghConfigDir = "${runDir}/gh";
  workspaceDir = cfg.workspaceDir;
  reposDir = "${cfg.stateDir}/repos";
  logDir = "${cfg.stateDir}/logs";
  # What root acts on (the deployment record, the bundle's generations and
  # the links into them) lives here, 0700 root, in no directory an agent
  # can write; the host binary's defaults name the same paths, so the SSM
  # documents' fixed command lines find them.
  rootDir = "/var/lib/clawdinator";
  deploymentRecord = "${rootDir}/deployment.json";
  configPath = "/etc/clawd/openclaw.json";

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

  # The instance metadata service (IPv4 and IPv6): the instance role's
  # credentials. Units that run agent code (or as the agents' user) are
  # denied it; the firewall also refuses the user, for what escapes a unit.
  metadataAddresses = [ "169.254.169.254" "fd00:ec2::254" ];
  noMetadata = { IPAddressDeny = metadataAddresses; };
  controlSocket = "/run/clawdinator-control/control.sock";

  oneshot = {
    Type = "oneshot";
    RemainAfterExit = true;
  };

  nullOrStr = description: mkOption { type = types.nullOr types.str; default = null; inherit description; };
  runTime = what: file: "${what}; null: read at run time from ${etc}/${file} (written by the instance's user data).";
}
