# Who may use the instance role. The metadata service is refused by
# default: the firewall lets through root's processes and, while it runs,
# the cgroup of each unit in metadataUnits (lib.nix: today the PR-intent
# publisher, a dynamic user), and rejects everyone else: the agents' user,
# the nix daemon's nixbld builders (a fixed-output build has the host's
# network), any other user. The agents' units are also denied the address
# by systemd (IPAddressDeny). The agents reach the control API only through
# the control helper: a root service on a Unix socket the agents' group may
# use, which checks each request's few fields and signs it with the role.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command harden controlSocket metadataChain metadataFamilies metadataUnits unitCgroup unitRule;
  inherit (lib) concatMapStrings mkIf mkOption types;
  chain = metadataChain;
  hold = "${chain}-hold";
  # One chain of our own, flushed and filled on every firewall start: a
  # reload never duplicates a rule. While it is refilled a rule in OUTPUT
  # (the hold) rejects the address for everyone, so a reload never opens it,
  # not even for a moment; the hold goes once the chain is whole. A running
  # unit's cgroup rule is re-added (its ExecStartPre added it; the flush
  # took it); a cgroup that is gone by then is refused by the kernel, and
  # that unit stays refused. First, a rule for a unit that is not running
  # goes (a reload re-added it while the unit was stopping): it matches
  # nothing, and iptables-legacy, which re-checks every rule on each
  # change, would refuse every later change while its cgroup is missing.
  rules = { tool, address }: concatMapStrings
    (unit: ''
      [ -d /sys/fs/cgroup/${unitCgroup unit} ] || while ${tool} -w -D ${chain} ${unitRule address unit} 2>/dev/null; do :; done
    '')
    metadataUnits + ''
    ${tool} -w -I OUTPUT 1 -d ${address} -m comment --comment ${hold} -j REJECT
    ${tool} -w -N ${chain} 2>/dev/null || ${tool} -w -F ${chain}
    ${tool} -w -A ${chain} -d ${address} -m owner --uid-owner 0 -j RETURN
  '' + concatMapStrings
    (unit: ''
      if [ -d /sys/fs/cgroup/${unitCgroup unit} ]; then ${tool} -w -A ${chain} ${unitRule address unit} 2>/dev/null || true; fi
    '')
    metadataUnits + ''
    ${tool} -w -A ${chain} -d ${address} -j REJECT
    ${tool} -w -C OUTPUT -j ${chain} 2>/dev/null || ${tool} -w -I OUTPUT -j ${chain}
    while ${tool} -w -D OUTPUT -d ${address} -m comment --comment ${hold} -j REJECT 2>/dev/null; do :; done
  '';
in
{
  options.services.clawdinator.controlHelper.enable = mkOption {
    type = types.bool;
    default = cfg.gateway.enable;
    defaultText = lib.literalExpression "config.services.clawdinator.gateway.enable";
    description = "The control helper at ${controlSocket}: the agents' only way to the control API (`clawdinator fleet control`).";
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = config.networking.firewall.enable && !config.networking.nftables.enable
          && (config.networking.firewall.backend or "iptables") == "iptables";
        message = "services.clawdinator refuses the metadata service to all but root (and the units that need the instance role) with iptables rules in networking.firewall.extraCommands: keep networking.firewall.enable = true, networking.nftables.enable = false and the iptables backend (no firewalld).";
      }
    ];

    networking.firewall.extraCommands = concatMapStrings rules metadataFamilies;
    # No extraStopCommands: the chain stays when the firewall stops, and when
    # a reload fails (NixOS then runs the stop commands and leaves the host
    # open): the metadata service is never opened to the agents by a firewall
    # that is down. Only a boot into a system without this module drops it.

    systemd.services.clawdinator-control-helper = mkIf cfg.controlHelper.enable {
      description = "clawdinator: the agents' checked, signed way to the control API (${controlSocket})";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "amazon-init.service" ];
      serviceConfig = harden { } // {
        # Root with the agents' group: the socket it makes (0660) is theirs to use.
        Group = cfg.group;
        RuntimeDirectory = "clawdinator-control";
        RuntimeDirectoryMode = "0750";
        Restart = "always";
        RestartSec = "5s";
        ExecStart = command ([ "fleet" "control-helper" "--socket" controlSocket ] ++ h.regionWords cfg.bootstrap.region);
      };
    };
  };
}
