# The host itself: the module's switch, the instance's name, the service
# user, the state directory, the host binary on the PATH, and the way in
# (SSM; SSH only with keys).
{ config, lib, pkgs, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg agenix runDir reposDir logDir rootDir nullOrStr runTime;
  inherit (lib) escapeShellArg literalExpression mkEnableOption mkIf mkOption types;
in
{
  options.services.clawdinator = {
    enable = mkEnableOption "a clawdinator host (bootstrap, secrets, memory, gateway)";

    buildInfo = lib.mkOption {
      type = types.nullOr (types.attrsOf types.anything);
      default = null;
      description = "What the host was built from (the flake sets it from flake.lock: nix/lib's buildInfo.fromLock), written to /etc/clawdinator/build-info.json for `clawdinator version`.";
    };

    instanceName = nullOrStr (runTime "This host's instance name, a key of nix/instances.json" "instance-name");

    user = mkOption { type = types.str; default = "clawdinator"; description = "The user the gateway and the agents run as."; };
    group = mkOption { type = types.str; default = "clawdinator"; description = "The group of the gateway, the agents and shared memory."; };

    hostPackage = mkOption {
      type = types.package;
      default = pkgs.clawdinator;
      defaultText = literalExpression "pkgs.clawdinator";
      description = "This project's host binary, `clawdinator`: every unit's command (this flake's overlay provides it).";
    };

    stateDir = mkOption { type = types.externalPath; default = "/var/lib/clawd"; description = "The gateway's home (the agents' own): workspace, repositories, logs. What root acts on is in ${rootDir}, never here."; };

    ssh = {
      enable = mkEnableOption "SSH (off: SSM Session Manager is the way in)";
      authorizedKeys = mkOption { type = types.listOf types.str; default = [ ]; description = "Keys allowed to log in as root when ssh.enable."; };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = !cfg.ssh.enable || cfg.ssh.authorizedKeys != [ ];
        message = "services.clawdinator.ssh.enable without ssh.authorizedKeys lets nobody in: add a key, or leave SSH off and use SSM Session Manager.";
      }
      {
        # The agents' directories must not contain root's, nor be it.
        assertion = lib.all (d: d != rootDir && !lib.hasPrefix "${d}/" rootDir && !lib.hasPrefix "${rootDir}/" d) [ cfg.stateDir cfg.memoryDir ];
        message = "services.clawdinator.stateDir and memoryDir are the agents' to write: neither may be, contain or lie in ${rootDir} (root's alone).";
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

    # The fleet revision a system was built from, beside it (`clawdinator version` on a host).
    system.systemBuilderCommands = lib.optionalString (config.system.configurationRevision != null) ''
      printf '%s' ${escapeShellArg config.system.configurationRevision} > $out/configurationRevision
    '';

    environment.etc."clawdinator/build-info.json" = mkIf (cfg.buildInfo != null) { text = builtins.toJSON cfg.buildInfo; };

    # The host binary for operators and agents: `clawdinator memory …` and friends.
    environment.systemPackages = [ cfg.hostPackage ];

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
      "d ${rootDir} 0700 root root - -"
    ];
  };
}
