# Who may use the instance role. The agents run untrusted code as
# ${cfg.user}: no unit of that user reaches the metadata service (systemd
# IPAddressDeny), and the firewall refuses the user itself, so a process
# that escapes its unit is refused too. Root's units keep the role. The
# agents reach the control API only through the control helper: a root
# service on a Unix socket the agents' group may use, which checks each
# request's few fields and signs it with the role.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg command harden controlSocket metadataAddresses;
  inherit (lib) concatMapStrings mkIf mkOption types;
  chain = "clawdinator-metadata";
  # One chain of our own, flushed and filled on every firewall start: a
  # reload never duplicates a rule.
  rules = tool: address: ''
    ${tool} -w -N ${chain} 2>/dev/null || ${tool} -w -F ${chain}
    ${tool} -w -C OUTPUT -j ${chain} 2>/dev/null || ${tool} -w -I OUTPUT -j ${chain}
    ${tool} -w -A ${chain} -d ${address} -m owner --uid-owner ${cfg.user} -j REJECT
  '';
  unrules = tool: ''
    ${tool} -w -D OUTPUT -j ${chain} 2>/dev/null || true
    ${tool} -w -F ${chain} 2>/dev/null || true
    ${tool} -w -X ${chain} 2>/dev/null || true
  '';
  v4 = builtins.elemAt metadataAddresses 0;
  v6 = builtins.elemAt metadataAddresses 1;
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
        assertion = config.networking.firewall.enable && !config.networking.nftables.enable;
        message = "services.clawdinator refuses the metadata service to ${cfg.user} with iptables rules in networking.firewall.extraCommands: keep networking.firewall.enable = true and networking.nftables.enable = false.";
      }
    ];

    networking.firewall.extraCommands = rules "iptables" v4 + rules "ip6tables" v6;
    networking.firewall.extraStopCommands = concatMapStrings unrules [ "iptables" "ip6tables" ];

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
