# The NixOS module evaluated with nixpkgs' real lib.evalModules, without
# nixpkgs itself: the NixOS options the module sets are declared here as
# stubs (typed like NixOS's where merging matters: unit lists concatenate),
# packages are stand-in derivations. Run by `cargo xtask test` with
# NIXPKGS_LIB pointing at a nixpkgs `lib/`:
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/module.nix --arg nixpkgsLib "$NIXPKGS_LIB"
#
# The result: `failures` (every expectation that does not hold; empty when
# all do), `cases` (how many configurations were evaluated), `commands`
# (every ExecStart/ExecStartPre that runs the host binary; the Rust side
# parses each against the CLI) and `flakeHosts` (the flake's
# nixosConfigurations, from its real outputs function with stand-in inputs)
# and `options` (the module's options, for docs/module-options.md), and
# `metadata`: the evaluated firewall rules and the publisher's scripts,
# which `cargo xtask test` runs against a real kernel (xtask/src/imds.rs).
{ nixpkgsLib }:

let
  lib = import nixpkgsLib;
  inherit (lib) types mkOption;
  fleetLib = import ../lib;

  stubPackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  pkgs = lib.genAttrs [ "openclaw-gateway" "clawdinator" "git" "gh" "jq" "ripgrep" "curl" "nodejs_22" "pnpm_10" "python3" "ffmpeg" "awscli2" "zstd" "util-linux" "rsync" "pi-coding-agent" "stunnel" "cacert" "bashInteractive" "iptables" ] stubPackage
    // {
    writeText = name: _text: stubPackage name;
    # A script's path names a hash of its text: two units' paths are equal
    # only when their scripts are.
    writeShellScript = name: text: stubPackage "${builtins.substring 0 16 (builtins.hashString "sha256" text)}-${name}";
  };
  bin = "${pkgs.clawdinator}/bin/clawdinator";

  anything = types.attrsOf types.anything;
  list = mkOption { type = types.listOf types.str; default = [ ]; };
  attrs = mkOption { type = anything; default = { }; };
  # A systemd unit as NixOS types the fields that merge.
  unit = types.submodule {
    freeformType = anything;
    options = {
      after = list;
      before = list;
      wants = list;
      requires = list;
      wantedBy = list;
      serviceConfig = attrs;
      unitConfig = attrs;
      timerConfig = attrs;
      path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
    };
  };

  # The NixOS (and nix-openclaw) options the module sets, as stubs.
  stubs = {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      warnings = list;
      systemd.services = mkOption { type = types.attrsOf unit; default = { }; };
      systemd.timers = mkOption { type = types.attrsOf unit; default = { }; };
      systemd.tmpfiles.rules = list;
      users.users = mkOption { type = types.attrsOf anything; default = { }; };
      users.groups = mkOption { type = types.attrsOf anything; default = { }; };
      fileSystems = mkOption { type = types.attrsOf anything; default = { }; };
      environment.etc = mkOption { type = types.attrsOf anything; default = { }; };
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      services.amazon-ssm-agent = attrs;
      programs.git = attrs;
      services.openssh = attrs;
      services.openclaw-gateway = attrs;
      networking.hostName = mkOption { type = types.str; default = "nixos"; };
      networking.firewall.enable = mkOption { type = types.bool; default = true; };
      networking.firewall.extraCommands = mkOption { type = types.lines; default = ""; };
      networking.firewall.extraStopCommands = mkOption { type = types.lines; default = ""; };
      networking.firewall.package = mkOption { type = types.package; default = pkgs.iptables; };
      networking.nftables.enable = mkOption { type = types.bool; default = false; };
      nix.settings = mkOption {
        type = types.submodule { freeformType = anything; options = { substituters = list; trusted-public-keys = list; allowed-users = list; trusted-users = list; }; };
        default = { };
      };
      swapDevices = mkOption { type = types.listOf anything; default = [ ]; };
      time.timeZone = mkOption { type = types.str; default = "UTC"; };
      system.stateVersion = mkOption { type = types.str; };
      system.configurationRevision = mkOption { type = types.nullOr types.str; default = null; };
      system.systemBuilderCommands = mkOption { type = types.lines; default = ""; };
      image.modules = attrs;
    };
    config._module.args.pkgs = pkgs;
  };

  evaluate = modules: (lib.evalModules {
    modules = [ stubs { _module.check = true; } ../modules/clawdinator ] ++ modules;
  }).config;
  failing = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  registry = fleetLib.hosts.fromRegistry { registryFile = ../instances.json; hostsDir = ../hosts; };
  host = name: evaluate ([ ../modules/fleet.nix registry.${name}.settings ] ++ registry.${name}.extraModules);
  firstName = builtins.head (builtins.attrNames registry);

  cases = {
    host = host firstName;
    image = evaluate [ ../modules/fleet.nix ../modules/image.nix ];
    secretsManager = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.secretsSource = "secretsmanager"; } ];
    minimal = evaluate [{ services.clawdinator = { enable = true; bootstrap.enable = true; discordTokenFile = "/run/agenix/t"; }; }];
    selfUpdate = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.selfUpdate.enable = true; } ];
    ssh = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.ssh = { enable = true; authorizedKeys = [ "ssh-ed25519 AAAA test" ]; }; } ];
    revision = evaluate [
      ../modules/fleet.nix
      registry.${firstName}.settings
      {
        system.configurationRevision = "0123456789abcdef0123456789abcdef01234567";
        services.clawdinator.buildInfo = fleetLib.buildInfo.fromLock { lockFile = ../../flake.lock; revision = "0123456789abcdef0123456789abcdef01234567"; };
      }
    ];
  };

  # Configurations that must fail, with the words their message must hold.
  negative = {
    "gateway without a Discord token" = {
      config = evaluate [{ services.clawdinator = { enable = true; bootstrap.enable = true; }; }];
      says = [ "services.clawdinator.discordTokenFile" "gateway.enable = false" ];
    };
    "GitHub App without ids" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.appId = lib.mkForce ""; } ];
      says = [ "githubApp.appId" "installationId" ];
    };
    "malformed EFS id" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.memoryEfs.fileSystemId = "fs-NOPE"; } ];
      says = [ "memoryEfs.fileSystemId" "fs-NOPE" "/etc/clawdinator/efs-id" ];
    };
    "bundle secrets without bootstrap" = {
      config = evaluate [{ services.clawdinator = { enable = true; discordTokenFile = "/run/agenix/t"; }; }];
      says = [ "secretsSource" "bootstrap.enable = true" ];
    };
    "a bot token that can write a repository flake.lock pins" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.repositories = [ "openclaw" "Nix-OpenClaw" ]; } ];
      says = [ "contents = write on Nix-OpenClaw" "flake.lock pins" ];
    };
    "a fleet cache key that is not a nix key" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.fleetCache.publicKey = "not a key"; } ];
      says = [ "fleetCache.publicKey" "generate-binary-cache-key" ];
    };
    "agents' state containing root's" = {
      config = evaluate [{ services.clawdinator = { enable = true; bootstrap.enable = true; discordTokenFile = "/run/agenix/t"; stateDir = "/var/lib"; }; }];
      says = [ "stateDir" "/var/lib/clawdinator" ];
    };
    "bundle links in the agents' state" = {
      config = evaluate [{ services.clawdinator = { enable = true; bootstrap.enable = true; discordTokenFile = "/run/agenix/t"; bootstrap.ageKeyPath = "/var/lib/clawd/key"; }; }];
      says = [ "ageKeyPath" "/var/lib/clawdinator" ];
    };
    "nftables instead of the iptables firewall" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { networking.nftables.enable = true; } ];
      says = [ "metadata service" "networking.nftables.enable = false" ];
    };
    "a bot token that can dispatch workflows" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.permissions.actions = "write"; } ];
      says = [ "githubApp.permissions" "actions or workflows" ];
    };
    "a bot token that can write the fleet's own repository" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.repositories = [ "openclaw" "clawdinators" ]; } ];
      says = [ "contents = write" "clawdinators" ];
    };
    "the nix daemon open to the agents' user" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { nix.settings.allowed-users = [ "clawdinator" ]; } ];
      says = [ "nix.settings.allowed-users admits the agents (clawdinator)" "nixbld" ];
    };
    "the nix daemon open to everyone" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { nix.settings.allowed-users = [ "*" ]; } ];
      says = [ "nix.settings.allowed-users admits the agents (*)" ];
    };
    "the agents' group trusted by the nix daemon" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { nix.settings.trusted-users = [ "@clawdinator" ]; } ];
      says = [ "nix.settings.trusted-users admits the agents (@clawdinator)" ];
    };
    "a proposals token that can push to the fleet" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.proposals.permissions = { issues = "write"; contents = "write"; }; } ];
      says = [ "githubApp.proposals.permissions" "contents" "never contents or pull_requests" ];
    };
    "a proposals token that can open pull requests on the fleet" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.proposals.permissions = { issues = "write"; pull_requests = "write"; }; } ];
      says = [ "githubApp.proposals.permissions" "pull_requests" ];
    };
    "a proposals token that can run workflows" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.proposals.permissions = { issues = "write"; actions = "read"; }; } ];
      says = [ "githubApp.proposals.permissions" "actions" ];
    };
    "SSH without keys" = {
      config = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.ssh.enable = true; } ];
      says = [ "ssh.enable" "authorizedKeys" ];
    };
  };

  # --- expectations -------------------------------------------------------

  expect = what: ok: if ok then [ ] else [ what ];
  has = haystack: needle: lib.hasInfix needle haystack;
  # Where needle first starts in haystack (-1: nowhere).
  at = haystack: needle:
    let parts = lib.splitString needle haystack; in
    if builtins.length parts < 2 then -1 else builtins.stringLength (builtins.head parts);
  # Each of the needles is in haystack, each after the one before.
  inOrder = haystack: needles:
    let found = map (at haystack) needles; in
    !(builtins.elem (-1) found) && found == lib.sort (a: b: a < b) found;
  # The module's own helpers over an evaluated configuration.
  helpers = config: import ../modules/clawdinator/lib.nix { inherit config lib; };
  services = config: config.systemd.services;
  svc = config: name: (services config).${name} or null;
  exec = config: name: lib.concatStringsSep "\n" (lib.toList ((svc config name).serviceConfig.ExecStart or ""));
  ordered = config: name: before: builtins.elem before (svc config name).after;
  needs = config: name: dep: builtins.elem dep (svc config name).requires;

  ourUnits = config: lib.filterAttrs (name: _: lib.hasPrefix "clawdinator" name) (services config);
  # The two units that switch the whole system cannot be sandboxed (see the module).
  sandboxExempt = [ "clawdinator-first-switch" "clawdinator-self-update" ];
  hardened = name: unit:
    let c = unit.serviceConfig; in
    expect "${name}: not hardened (NoNewPrivileges, ProtectSystem=strict, PrivateTmp, ProtectHome, RestrictAddressFamilies, CapabilityBoundingSet)"
      ((c.NoNewPrivileges or false) && (c.ProtectSystem or "") == "strict" && (c.PrivateTmp or false)
      && (c.ProtectHome or false) && (c ? RestrictAddressFamilies) && (c ? CapabilityBoundingSet))
    ++ expect "${name}: ProtectSystem=strict without ReadWritePaths it needs"
      (!(c ? ReadWritePaths) || builtins.all (p: lib.hasPrefix "/" p) c.ReadWritePaths);

  githubChecks = let c = cases.host; in lib.concatLists [
    (expect "the proposals token: the fleet repository only, issues write, contents read, its own gh dir, same schedule, root mints"
      (
        let e = exec c "clawdinator-github-proposals-token"; in
        has e "--repository clawdinators" && !(has e "--repository openclaw") && has e "--permission 'issues=write'"
        && has e "--permission 'contents=read'" && !(has e "=write' --permission 'contents=write") && !(has e "pull_requests")
        && has e "--gh-config-dir /run/clawd/gh-proposals" && has e "--env-file /run/clawd/github-proposals.env"
        && has e "--owner clawdinator" && !((svc c "clawdinator-github-proposals-token").serviceConfig ? User)
        && ((svc c "clawdinator-github-proposals-token").serviceConfig.IPAddressDeny or [ ]) != [ ]
        && c.systemd.timers.clawdinator-github-proposals-token.timerConfig.OnUnitActiveSec == "45min"
        && c.services.openclaw-gateway.environment.CLAWDINATOR_PROPOSALS_GH_CONFIG_DIR == "/run/clawd/gh-proposals"
        && c.services.openclaw-gateway.environment.GH_CONFIG_DIR == "/run/clawd/gh"
      ))
    (expect "the GitHub snapshot every 15 minutes, caught up after downtime, a minute of jitter, bounded"
      (
        let t = c.systemd.timers.clawdinator-github-sync.timerConfig; in
        (t.OnCalendar or null) == "*:0/15" && (t.Persistent or false) && (t.RandomizedDelaySec or null) == "60s"
        && ((svc c "clawdinator-github-sync").serviceConfig.TimeoutStartSec or null) == "10min"
      ))
    (expect "the proposals token off: no unit, no variable"
      (
        let d = evaluate [ ../modules/fleet.nix registry.${firstName}.settings { services.clawdinator.githubApp.proposals.enable = false; } ]; in
        svc d "clawdinator-github-proposals-token" == null && !(d.services.openclaw-gateway.environment ? CLAWDINATOR_PROPOSALS_GH_CONFIG_DIR)
      ))
  ];

  hostChecks = let c = cases.host; in
    lib.concatLists [
      (lib.concatLists (lib.mapAttrsToList hardened (removeAttrs (ourUnits c) sandboxExempt)))
      (expect "clawdinator-bootstrap runs `bootstrap fetch` with this instance's prefix from the registry and the rest from /etc/clawdinator"
        (
          let e = exec c "clawdinator-bootstrap"; in
          has e "${bin} bootstrap fetch" && has e "--prefix bootstrap/${firstName}" && has e "--bucket-file /etc/clawdinator/bucket"
          && has e "--region-file /etc/clawdinator/region" && has e "--state-dir /var/lib/clawdinator/bootstrap"
          && has e "--secrets-dir /var/lib/clawdinator/nix-secrets" && has e "--age-key-path /var/lib/clawdinator/clawdinator.agekey"
        ))
      (expect "what root acts on is in /var/lib/clawdinator, 0700 root, outside every directory the agents write"
        (builtins.elem "d /var/lib/clawdinator 0700 root root - -" c.systemd.tmpfiles.rules
          && !(lib.hasPrefix "/var/lib/clawdinator/" c.services.clawdinator.stateDir)))
      (expect "clawdinator-bootstrap waits for the network and for user data (amazon-init)"
        (ordered c "clawdinator-bootstrap" "network-online.target" && ordered c "clawdinator-bootstrap" "amazon-init.service"))
      (expect "clawdinator-secrets (bundle) decrypts the bundle into /run/agenix for the service user, after and requiring bootstrap"
        (
          let e = exec c "clawdinator-secrets"; in
          has e "${bin} secrets install" && has e "--dest /run/agenix" && has e "--owner clawdinator"
          && ordered c "clawdinator-secrets" "clawdinator-bootstrap.service" && needs c "clawdinator-secrets" "clawdinator-bootstrap.service"
        ))
      (expect "clawdinator-repo-seed installs seeds into /var/lib/clawd/repos for the agents (root keeps no copy of the fleet's flake), after bootstrap"
        (has (exec c "clawdinator-repo-seed") "bootstrap seeds install --from /var/lib/clawdinator/repo-seeds --dest /var/lib/clawd/repos"
          && !(has (exec c "clawdinator-repo-seed") "--only")
          && needs c "clawdinator-repo-seed" "clawdinator-bootstrap.service"))
      (expect "clawdinator-efs-stunnel writes its config from /etc/clawdinator/efs-id, then runs stunnel, as a dynamic user"
        (
          let u = (svc c "clawdinator-efs-stunnel").serviceConfig; in
          has u.ExecStartPre "host efs-stunnel-config" && has u.ExecStartPre "--file-system-id-file /etc/clawdinator/efs-id"
          && has u.ExecStart "stunnel" && u.DynamicUser
        ))
      (expect "/memory is NFS 4.1 through the tunnel"
        (c.fileSystems ? "/memory" && c.fileSystems."/memory".fsType == "nfs4"
          && builtins.elem "x-systemd.requires=clawdinator-efs-stunnel.service" c.fileSystems."/memory".options))
      (expect "clawdinator-memory-init fills /memory from the templates once it is mounted"
        (has (exec c "clawdinator-memory-init") "memory init --root /memory --templates"
          && (svc c "clawdinator-memory-init").unitConfig.RequiresMountsFor == [ "/memory" ]))
      (expect "clawdinator-github-app-token mints as root, narrowed to the agents' repositories and permissions, and hands /run/clawd/github-app.env to the service user, every 45 min"
        (
          let e = exec c "clawdinator-github-app-token"; in
          has e "secrets github-token" && has e "--env-file /run/clawd/github-app.env" && has e "--app-id 2607181"
          && has e "--repository openclaw" && !(has e "--repository clawdinators") && has e "--permission 'contents=write'"
          && !(has e "actions=") && !(has e "workflows=") && has e "--owner clawdinator"
          && !((svc c "clawdinator-github-app-token").serviceConfig ? User)
          && c.systemd.timers.clawdinator-github-app-token.timerConfig.OnUnitActiveSec == "45min"
        ))
      (expect "the agents' git: the bot identity, the seeded clones trusted, the App token from its file; gh through GH_CONFIG_DIR"
        (
          let g = c.programs.git.config; in
          c.programs.git.enable && g.user.name == "CLAWDINATOR Bot" && g.safe.directory == [ "/var/lib/clawd/repos/*" ]
          && has g.credential."https://github.com".helper "/run/clawd/gh/token"
          && has (exec c "clawdinator-github-app-token") "--gh-config-dir /run/clawd/gh"
          && c.services.openclaw-gateway.environment.GH_CONFIG_DIR == "/run/clawd/gh"
          && builtins.all (p: builtins.elem pkgs.${p} c.services.openclaw-gateway.servicePath) [ "nodejs_22" "pnpm_10" "python3" "ffmpeg" "gh" "zstd" "util-linux" "rsync" ]
          && !(builtins.elem pkgs.awscli2 c.services.openclaw-gateway.servicePath)
        ))
      (expect "the pi coding agent: on the gateway's PATH, its settings linked, its credentials written as the agents' user before the gateway"
        (
          let u = svc c "clawdinator-pi-auth"; in
          builtins.elem pkgs.pi-coding-agent c.services.openclaw-gateway.servicePath
          && builtins.elem "L+ /var/lib/clawd/.pi/agent/settings.json - - - - /etc/clawdinator/pi-settings.json" c.systemd.tmpfiles.rules
          && u != null && u.serviceConfig.User == "clawdinator" && builtins.elem "clawdinator.service" u.before
          && has (exec c "clawdinator-pi-auth") "host pi-auth --openai-key-file /run/agenix/clawdinator-openai-api-key-peter-2"
          && has (exec c "clawdinator-pi-auth") "--out /var/lib/clawd/.pi/agent/auth.json"
        ))
      (expect "the bots' App key is installed for root alone"
        (has (exec c "clawdinator-secrets") "--root-only clawdinator-github-app.pem"))
      (expect "the gateway is nix-openclaw's unit named clawdinator, started through `host exec` with the tokens, workspace seeded first"
        (
          let g = c.services.openclaw-gateway; in
          g.enable && g.unitName == "clawdinator" && g.createUser == false
          && has g.execStart "${bin} host exec" && has g.execStart "--secret-env 'DISCORD_BOT_TOKEN=/run/agenix/clawdinator-discord-token-1'"
          && has g.execStart "/bin/openclaw gateway --port 18789"
          && has (builtins.head g.execStartPre) "host workspace-seed" && has (builtins.head g.execStartPre) "--cron-store /var/lib/clawd/cron-jobs.json"
        ))
      (expect "the gateway starts after bootstrap, secrets, repo seed, memory and the token, and requires the secrets"
        (builtins.all (ordered c "clawdinator") [ "clawdinator-bootstrap.service" "clawdinator-secrets.service" "clawdinator-repo-seed.service" "clawdinator-memory-init.service" "clawdinator-github-app-token.service" ]
          && needs c "clawdinator" "clawdinator-secrets.service"))
      (expect "the gateway may write only its state, memory and /run/clawd"
        ((svc c "clawdinator").serviceConfig.ReadWritePaths == [ "/var/lib/clawd" "/memory" "/run/clawd" ]))
      (expect "no self-update and no first switch on a deployed host by default"
        (svc c "clawdinator-self-update" == null && svc c "clawdinator-first-switch" == null))
      (expect "no unit that runs as the agents' user, nor the gateway, reaches the metadata service"
        (
          let agentUnits = lib.filterAttrs (n: u: (u.serviceConfig.User or "root") == "clawdinator" || n == "clawdinator") (services c); in
          agentUnits != { } && lib.all (u: u.serviceConfig.IPAddressDeny or [ ] == [ "169.254.169.254" "fd00:ec2::254" ]) (lib.attrValues agentUnits)
        ))
      (expect "root's units that need no instance role are denied the metadata service too (the GitHub token units, the snapshot)"
        (
          let named = [ "clawdinator-github-app-token" "clawdinator-github-proposals-token" "clawdinator-github-sync" ]; in
          lib.all (n: ((svc c n).serviceConfig.IPAddressDeny or [ ]) == [ "169.254.169.254" "fd00:ec2::254" ]) named
        ))
      (expect "the firewall refuses the metadata service by default, IPv4 and IPv6, in a chain of its own: root returns, the publisher's cgroup returns when it exists (and its rule goes when it does not), everyone else is rejected; a hold rejects all while the chain is refilled"
        (
          let x = c.networking.firewall.extraCommands; in
          lib.all
            ({ tool, address }: inOrder x [
              "[ -d /sys/fs/cgroup/system.slice/clawdinator-publish-tree.service ] || while ${tool} -w -D clawdinator-metadata -d ${address} -m cgroup --path system.slice/clawdinator-publish-tree.service -j RETURN 2>/dev/null; do :; done\n"
              "${tool} -w -I OUTPUT 1 -d ${address} -m comment --comment clawdinator-metadata-hold -j REJECT\n"
              "${tool} -w -N clawdinator-metadata 2>/dev/null || ${tool} -w -F clawdinator-metadata\n"
              "${tool} -w -A clawdinator-metadata -d ${address} -m owner --uid-owner 0 -j RETURN\n"
              "if [ -d /sys/fs/cgroup/system.slice/clawdinator-publish-tree.service ]; then ${tool} -w -A clawdinator-metadata -d ${address} -m cgroup --path system.slice/clawdinator-publish-tree.service -j RETURN 2>/dev/null || true; fi\n"
              "${tool} -w -A clawdinator-metadata -d ${address} -j REJECT\n"
              "${tool} -w -C OUTPUT -j clawdinator-metadata 2>/dev/null || ${tool} -w -I OUTPUT -j clawdinator-metadata\n"
              "while ${tool} -w -D OUTPUT -d ${address} -m comment --comment clawdinator-metadata-hold -j REJECT 2>/dev/null; do :; done\n"
            ]) [{ tool = "iptables"; address = "169.254.169.254"; } { tool = "ip6tables"; address = "fd00:ec2::254"; }]
          && !(has x "--uid-owner clawdinator") && builtins.length (lib.splitString " -j REJECT\n" x) == 5
        ))
      (expect "the metadata chain stays when the firewall stops or a reload fails (no stop command removes it)"
        (!(has c.networking.firewall.extraStopCommands "clawdinator-metadata")))
      (expect "a host without the publisher lets no cgroup through to the metadata service"
        (
          let x = (host "clawdinator-2").networking.firewall.extraCommands; in
          !(has x "-m cgroup") && has x "iptables -w -A clawdinator-metadata -d 169.254.169.254 -j REJECT"
        ))
      (expect "the publisher lets its own cgroup through as root before it starts (ExecStartPre=+) and takes it back when it stops (ExecStopPost=+), IPv4 and IPv6, with the firewall's iptables"
        (
          let
            u = (svc c "clawdinator-publish-tree").serviceConfig;
            m = helpers c;
            script = what: "+${pkgs.writeShellScript "clawdinator-publish-tree-metadata-${what}" (m.metadataScript what "clawdinator-publish-tree")}";
            allow = m.metadataScript "allow" "clawdinator-publish-tree";
            revoke = m.metadataScript "revoke" "clawdinator-publish-tree";
            rule = address: "-d ${address} -m cgroup --path system.slice/clawdinator-publish-tree.service -j RETURN";
          in
          u.ExecStartPre == [ (script "allow") ] && u.ExecStopPost == [ (script "revoke") ] && !(u ? Slice)
          && has allow "PATH=${pkgs.iptables}/bin\n" && has revoke "PATH=${pkgs.iptables}/bin\n"
          && inOrder allow [ "set -eu\n" "iptables -w -D clawdinator-metadata ${rule "169.254.169.254"}" "iptables -w -I clawdinator-metadata ${rule "169.254.169.254"}\n" ]
          && inOrder allow [ "ip6tables -w -D clawdinator-metadata ${rule "fd00:ec2::254"}" "ip6tables -w -I clawdinator-metadata ${rule "fd00:ec2::254"}\n" ]
          && has revoke "while iptables -w -D clawdinator-metadata ${rule "169.254.169.254"} 2>/dev/null; do :; done"
          && has revoke "while ip6tables -w -D clawdinator-metadata ${rule "fd00:ec2::254"} 2>/dev/null; do :; done"
          && !(has revoke " -I ")
        ))
      (expect "the publisher has a start timeout, under its schedule: a hung read cannot hold it forever"
        (((svc c "clawdinator-publish-tree").serviceConfig.TimeoutStartSec or null) == "5min"))
      (expect "only root may use the nix daemon, and only root is trusted"
        (c.nix.settings.allowed-users == [ "root" ] && c.nix.settings.trusted-users == [ "root" ]))
      (expect "the control helper runs as root with the agents' group on /run/clawdinator-control, and the gateway knows its socket"
        (
          let u = svc c "clawdinator-control-helper"; in
          u != null && !(u.serviceConfig ? User) && u.serviceConfig.Group == "clawdinator"
          && u.serviceConfig.RuntimeDirectory == "clawdinator-control" && u.serviceConfig.RuntimeDirectoryMode == "0750"
          && has (exec c "clawdinator-control-helper") "fleet control-helper --socket /run/clawdinator-control/control.sock"
          && !(u.serviceConfig ? IPAddressDeny)
          && c.services.openclaw-gateway.environment.CLAWDINATOR_CONTROL_SOCKET == "/run/clawdinator-control/control.sock"
        ))
      (expect "clawdinator-1 publishes the PR-intent tree as a dynamic user of the agents' group (neither root nor the agents) every 10 minutes, once /memory is mounted"
        (
          let u = svc c "clawdinator-publish-tree"; in
          u != null && u.serviceConfig.DynamicUser && u.serviceConfig.SupplementaryGroups == [ "clawdinator" ]
          && !(u.serviceConfig ? User) && !(u.serviceConfig ? IPAddressDeny)
          && has (exec c "clawdinator-publish-tree") "host publish-tree --from /memory/pr-intent/v1 --bucket openclaw-pr-intent --prefix v1/"
          && u.unitConfig.RequiresMountsFor == [ "/memory" ] && c.systemd.timers.clawdinator-publish-tree.timerConfig.OnCalendar == "*:0/10"
          && svc (host "clawdinator-2") "clawdinator-publish-tree" == null
        ))
      (expect "the host builds nothing and trusts only upstream's key and the fleet cache's committed key"
        (c.nix.settings.max-jobs == 0 && c.nix.settings.builders == "" && c.nix.settings.require-sigs
          && c.nix.settings.trusted-public-keys == [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" (lib.fileContents ../keys/fleet-cache.pub) ]
          && c.swapDevices == [ ]))
      (expect "no bot token writes a repository flake.lock pins (the default list is checked against the lock)"
        (builtins.elem "openclaw/nix-openclaw" c.services.clawdinator.githubApp.lockedRepositories
          && builtins.elem "openclaw/nix-steipete-tools" c.services.clawdinator.githubApp.lockedRepositories
          && !(has (exec c "clawdinator-github-app-token") "--repository nix-openclaw")))
      (expect "the gateway gets the fleet's shared configuration and an agent named after the instance"
        (
          let g = c.services.openclaw-gateway.config; in
          g.agents.defaults.model.primary == "openai/gpt-5.2-codex" && g.agents.defaults.maxConcurrent == 4
          && g.agents.list == [{ id = "main"; default = true; identity.name = lib.toUpper firstName; }]
          && g.agents.defaults.workspace == "/var/lib/clawd/workspace" && g.channels.telegram.enabled
          && g.channels.discord.guilds."1456350064065904867".channels."1458426982579830908".requireMention
        ))
      (expect "the gateway's output goes to the journal of the unit `fleet logs` reads by default (clawdinator), not to a file"
        (
          let u = (svc c "clawdinator").serviceConfig; in
          c.services.openclaw-gateway.unitName == "clawdinator" && (u.StandardOutput or null) == "journal" && (u.StandardError or null) == "journal"
          && c.services.openclaw-gateway.config.logging.consoleLevel == "info"
        ))
      (expect "the gateway starts only after, and only with, the firewall that refuses the metadata service"
        (let u = svc c "clawdinator"; in builtins.elem "firewall.service" u.requires && builtins.elem "firewall.service" u.after))
      (expect "operators on the host have the openclaw CLI, the gateway's own package"
        (builtins.elem pkgs.openclaw-gateway c.environment.systemPackages && !(builtins.elem pkgs.openclaw-gateway cases.image.environment.systemPackages)))
      (expect "SSH is off and SSM is the way in" (!c.services.openssh.enable && c.services.amazon-ssm-agent.enable))
      (expect "the host is named from the registry" (c.networking.hostName == firstName))
      (expect "the memory commands are on every PATH" (builtins.elem pkgs.clawdinator c.environment.systemPackages))
      (expect "a valid host configuration raises no assertion" (failing c == [ ]))
    ];

  otherChecks = lib.concatLists [
    (
      let c = host "clawdinator-babelfish"; g = c.services.openclaw-gateway; in lib.concatLists [
        (expect "babelfish: its own workspace and templates, one model, every tool denied"
          (g.config.agents.defaults.workspace == "/var/lib/clawd/workspace-babelfish"
            && has (builtins.head g.execStartPre) "workspace-babelfish" && g.config.agents.defaults.model.primary == "openai/gpt-5.2"
            && (builtins.head g.config.agents.list).tools.deny == [ "*" ] && g.config.skills.allowBundled == [ ]))
        (expect "babelfish: no Telegram (neither token nor plugin), no GitHub snapshot, no cron"
          (!(has g.execStart "TELEGRAM") && !g.config.plugins.entries.telegram.enabled && !(g.config.channels ? telegram)
            && svc c "clawdinator-github-sync" == null && !g.config.cron.enabled))
        (expect "babelfish: the two translation channels, no mention needed, the translation rules as their prompt"
          (
            let chans = g.config.channels.discord.guilds."1456350064065904867".channels; in
            builtins.attrNames chans == [ "1467469670192910387" "1468983176620675132" ]
            && lib.all (ch: !ch.requireMention && has ch.systemPrompt "CLAWDINATOR-BABELFISH") (builtins.attrValues chans)
          ))
        (expect "babelfish: valid" (failing c == [ ]))
      ]
    )
    (
      let c = cases.image; in lib.concatLists [
        (expect "image: clawdinator-first-switch runs once (never with a recorded deployment), the newest release's system from the fleet cache, after user data"
          (
            let u = svc c "clawdinator-first-switch"; in
            u != null && u.unitConfig.ConditionPathExists == "!/var/lib/clawdinator/deployment.json"
            && has u.serviceConfig.ExecStart "host first-switch --record /var/lib/clawdinator/deployment.json"
            && has u.serviceConfig.ExecStart "--instance-file /etc/clawdinator/instance-name"
            && has u.serviceConfig.ExecStart "--bucket-file /etc/clawdinator/bucket"
            && has u.serviceConfig.ExecStart "--cache-bucket-file /etc/clawdinator/cache-bucket"
            && !(has u.serviceConfig.ExecStart "--flake")
            && builtins.elem "amazon-init.service" u.after
          ))
        (expect "image: no gateway, no GitHub token before the instance knows who it is"
          (!(c.services.openclaw-gateway.enable or false) && svc c "clawdinator-github-app-token" == null))
        (expect "image: a raw amazon image from nixpkgs' builder" (c.image.modules.amazon.amazonImage.format == "raw"))
        (expect "image: valid" (failing c == [ ]))
      ]
    )
    (expect "secretsmanager: `secrets fetch` for this instance with the registry and the secrets list"
      (
        let e = exec cases.secretsManager "clawdinator-secrets"; in
        has e "secrets fetch" && has e "--instance ${firstName}" && has e "-instances.json" && has e "-secrets.json"
        && cases.secretsManager.systemd.services.clawdinator-secrets.requires == [ ]
      ))
    (expect "minimal: memory in the state directory, no EFS tunnel, no GitHub units"
      (
        let c = cases.minimal; in
        svc c "clawdinator-efs-stunnel" == null && !(c.fileSystems ? "/memory") && svc c "clawdinator-github-app-token" == null
        && has (exec c "clawdinator-memory-init") "--root /var/lib/clawd/memory"
        && has (exec c "clawdinator-bootstrap") "--prefix-file /etc/clawdinator/bootstrap-prefix"
      ))
    (expect "selfUpdate: a timer and `host self-update`"
      (cases.selfUpdate.systemd.timers ? clawdinator-self-update && has (exec cases.selfUpdate "clawdinator-self-update") "host self-update"))
    (expect "the system records its revision in configurationRevision (host switch checks it)"
      (has cases.revision.system.systemBuilderCommands "0123456789abcdef0123456789abcdef01234567"
        && has cases.revision.system.systemBuilderCommands "> $out/configurationRevision"
        && cases.host.system.systemBuilderCommands == ""))
    (expect "the build info (this revision, nix-openclaw's and nixpkgs' locked revisions and times) is in /etc for `clawdinator version`"
      (
        let info = builtins.fromJSON cases.revision.environment.etc."clawdinator/build-info.json".text; in
        info.revision == "0123456789abcdef0123456789abcdef01234567"
        && builtins.stringLength info.inputs.nix-openclaw.rev == 40 && info.inputs.nixpkgs.lastModified > 0
        && !(cases.host.environment.etc ? "clawdinator/build-info.json")
      ))
    (expect "ssh: on with the keys given" (cases.ssh.services.openssh.enable && cases.ssh.users.users.root.openssh.authorizedKeys.keys == [ "ssh-ed25519 AAAA test" ]))
  ];

  # Attack: a second host polls the fleet's one Telegram bot (clawdinator-2
  # without its host file, Telegram on as the shared configuration has it;
  # another host with only the plugin on; a bot token set inline on one
  # host and in an account of another). Each is refused, naming both hosts
  # and the token, never an inline token's value.
  telegramChecks =
    let
      telegram = import ../gateway/telegram.nix;
      fleet = builtins.mapAttrs (name: _: telegram.fromConfig (host name)) registry;
      as = name: extra: telegram.fromConfig (evaluate ([ ../modules/fleet.nix registry.${name}.settings ] ++ extra));
      doubled = telegram.problems (fleet // { clawdinator-2 = as "clawdinator-2" [ ]; });
      pluginOnly = telegram.problems (fleet // {
        clawdinator-2 = as "clawdinator-2" [
          ../hosts/clawdinator-2.nix
          {
            services.clawdinator.config.plugins.entries.telegram.enabled = lib.mkOverride 10 true;
            services.clawdinator.telegramBotTokenFile = lib.mkOverride 10 "/run/agenix/clawdinator-telegram-bot-token";
          }
        ];
      });
      inline = telegram.problems {
        a = as "clawdinator-1" [{ services.clawdinator.config.channels.telegram.botToken = "123456:NOT-A-REAL-TOKEN"; }];
        b = as "clawdinator-2" [ ../hosts/clawdinator-2.nix { services.clawdinator.config.channels.telegram = lib.mkOverride 10 { accounts.ops.botToken = "123456:NOT-A-REAL-TOKEN"; }; } ];
      };
      names = problems: needles: builtins.length problems == 1 && builtins.all (has (builtins.head problems)) needles;
      fix = [ "channels.telegram.enabled = false" "plugins.entries.telegram.enabled = false" ];
    in
    lib.concatLists [
      (expect "Telegram: one host of the fleet polls the bot (clawdinator-1), none shares its token"
        (telegram.problems fleet == [ ] && lib.mapAttrs (_: t: t != [ ]) (telegram.pollers fleet)
          == { clawdinator-1 = true; clawdinator-2 = false; clawdinator-babelfish = false; }))
      (expect "Telegram: clawdinator-2 has neither the channel, nor the plugin, nor the token in its environment"
        (
          let g = (host "clawdinator-2").services.openclaw-gateway; in
          g.config.channels.telegram == { enabled = false; } && !g.config.plugins.entries.telegram.enabled && !(has g.execStart "TELEGRAM")
        ))
      (expect "Telegram: a second host polling the token is refused, naming both hosts, the token and the fix: ${builtins.toJSON doubled}"
        (names doubled ([ "`clawdinator-1`" "`clawdinator-2`" "/run/agenix/clawdinator-telegram-bot-token" ] ++ fix)))
      (expect "Telegram: the plugin on with the token in the environment counts as polling: ${builtins.toJSON pluginOnly}"
        (names pluginOnly [ "`clawdinator-1`" "`clawdinator-2`" ]))
      (expect "Telegram: one inline token on two hosts is refused without showing it: ${builtins.toJSON inline}"
        (names inline [ "`a`" "`b`" "botToken" ] && !(has (builtins.head inline) "NOT-A-REAL-TOKEN")))
    ];

  negativeChecks = lib.concatLists (lib.mapAttrsToList
    (what: { config, says }:
      let messages = failing config; in
      expect "${what}: expected an assertion saying ${builtins.toJSON says}, got ${builtins.toJSON messages}"
        (builtins.any (m: builtins.all (has m) says) messages))
    negative);

  # Every command line of ours the units run, for the CLI parse on the Rust side.
  commandsOf = config:
    let
      lines = lib.concatLists (lib.mapAttrsToList
        (_: u: lib.toList (u.serviceConfig.ExecStartPre or [ ]) ++ lib.toList (u.serviceConfig.ExecStart or [ ]))
        (services config));
      gateway = config.services.openclaw-gateway;
    in
    lines ++ (gateway.execStartPre or [ ]) ++ lib.optional (gateway ? execStart) gateway.execStart;

  # The flake's real outputs function with stand-in inputs: its hosts are
  # the registry's plus the image, each built from the registry's settings.
  flakeHosts =
    let
      flake = import ../../flake.nix;
      inputs = {
        nixpkgs.lib = lib // { nixosSystem = args: { inherit (args) modules; }; };
        nix-openclaw = { nixosModules.openclaw-gateway = { }; overlays.default = _: _: { }; };
      };
      outputs = flake.outputs (inputs // { self = outputs // { rev = "0000000000000000000000000000000000000000"; }; });
      nameIn = host: lib.findFirst (m: builtins.isAttrs m && m ? services.clawdinator.instanceName) null host.modules;
    in
    lib.mapAttrs (_: host: if nameIn host == null then null else (nameIn host).services.clawdinator.instanceName) outputs.nixosConfigurations;
in
{
  failures = githubChecks ++ hostChecks ++ otherChecks ++ telegramChecks ++ negativeChecks;
  cases = builtins.length (builtins.attrNames cases) + builtins.length (builtins.attrNames negative);
  commands = lib.unique (lib.filter (lib.hasPrefix bin) (lib.concatMap commandsOf (builtins.attrValues cases)));
  inherit bin flakeHosts;
  # The metadata service's rules as a host evaluates them, for the check
  # that runs them against a real kernel (xtask/src/imds.rs): the firewall's
  # commands, the publisher's two scripts, its cgroup, and the nix daemon's
  # users.
  metadata =
    let
      c = cases.host;
      m = helpers c;
    in
    {
      firewall = c.networking.firewall.extraCommands;
      firewallStop = c.networking.firewall.extraStopCommands;
      allow = m.metadataScript "allow" m.publisherUnit;
      revoke = m.metadataScript "revoke" m.publisherUnit;
      cgroup = m.unitCgroup m.publisherUnit;
      chain = m.metadataChain;
      addresses = m.metadataAddresses;
      inherit (c.nix.settings) allowed-users trusted-users;
    };
  # What each host's gateway is handed (nix/gateway/golden/<name>.json).
  gatewayConfigs = builtins.mapAttrs (name: _: (host name).services.openclaw-gateway.config) registry;
  # The module's options as the NixOS manual lists them (docs/module-options.md).
  options =
    let
      docs = lib.optionAttrSetToDocList (lib.evalModules { modules = [ stubs ../modules/clawdinator ]; }).options;
      ours = lib.filter (o: lib.hasPrefix "services.clawdinator." o.name && o.visible && !o.internal) docs;
    in
    map (o: { inherit (o) name type; description = o.description or ""; default = o.default.text or null; }) ours;
}
