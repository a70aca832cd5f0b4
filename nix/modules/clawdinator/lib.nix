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
  # credentials. The firewall refuses it to every process but root's and
  # those of the units in metadataUnits (instance-role.nix); units that run
  # agent code are also denied it by systemd.
  metadataAddresses = [ "169.254.169.254" "fd00:ec2::254" ];
  noMetadata = { IPAddressDeny = metadataAddresses; };

  # The firewall's chain for it, per family: the tool and the address.
  metadataChain = "clawdinator-metadata";
  metadataFamilies = [
    { tool = "iptables"; address = builtins.elemAt metadataAddresses 0; }
    { tool = "ip6tables"; address = builtins.elemAt metadataAddresses 1; }
  ];
  # The units that need the instance role by design and do not run as root,
  # each let through by its own cgroup while it runs, not by uid (a dynamic
  # user's uid is allocated per run and may be another unit's next time).
  # Today the PR-intent publisher (public-tree.nix).
  publisherUnit = "clawdinator-publish-tree";
  metadataUnits = lib.optional cfg.publicTree.enable publisherUnit;
  unitCgroup = unit: "system.slice/${unit}.service";
  # The rule (after the chain's name) that lets a unit's cgroup through.
  unitRule = address: unit: "-d ${address} -m cgroup --path ${unitCgroup unit} -j RETURN";

  # The kernel resolves a cgroup rule's path when the rule is added and
  # refuses one whose cgroup does not exist, so the unit's rule is added
  # when it starts, by root, from inside the unit's cgroup (ExecStartPre=+),
  # and taken back when it stops (ExecStopPost=+). Copies of the rule are
  # removed first: one a firewall reload re-added as the unit was stopping
  # would still name the path but match only the old, gone cgroup.
  metadataAllowText = unit: ''
    set -eu
  '' + lib.concatMapStrings
    ({ tool, address }: ''
      while ${tool} -w -D ${metadataChain} ${unitRule address unit} 2>/dev/null; do :; done
      ${tool} -w -I ${metadataChain} ${unitRule address unit}
    '')
    metadataFamilies;
  metadataRevokeText = unit: ''
    set -u
    status=0
  '' + lib.concatMapStrings
    ({ tool, address }: ''
      while ${tool} -w -D ${metadataChain} ${unitRule address unit} 2>/dev/null; do :; done
      if ${tool} -w -C ${metadataChain} ${unitRule address unit} 2>/dev/null; then
        echo "${unit}: its cgroup is still let through to ${address}" >&2
        status=1
      fi
    '')
    metadataFamilies + ''
    exit "$status"
  '';
  # The two scripts' text, with the firewall's own iptables on the PATH.
  metadataScript = what: unit: ''
    PATH=${lib.makeBinPath [ config.networking.firewall.package ]}
  '' + { allow = metadataAllowText; revoke = metadataRevokeText; }.${what} unit;
  # What such a unit's serviceConfig gets: the two root commands, run from
  # store paths root owns.
  metadataAccess = pkgs: unit:
    let script = what: "+${pkgs.writeShellScript "${unit}-metadata-${what}" (metadataScript what unit)}"; in
    {
      ExecStartPre = [ (script "allow") ];
      ExecStopPost = [ (script "revoke") ];
    };
  controlSocket = "/run/clawdinator-control/control.sock";

  oneshot = {
    Type = "oneshot";
    RemainAfterExit = true;
  };

  nullOrStr = description: mkOption { type = types.nullOr types.str; default = null; inherit description; };
  runTime = what: file: "${what}; null: read at run time from ${etc}/${file} (written by the instance's user data).";
}
