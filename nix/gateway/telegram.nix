# One Telegram bot token, one poller: Telegram hands each update to one
# getUpdates caller, so two gateways polling the same bot take each
# other's messages (and Telegram answers the loser 409 Conflict). This
# reads every host's rendered gateway configuration and names each token
# that more than one host enables. Builtins only: the flake and the
# module test call it with evaluated host configurations.
let
  isSet = v: builtins.isAttrs v;
  on = v: v == true;

  # A token as a readable name: a file is named by its path (every host
  # reading /run/agenix/<secret> reads the same secret), an inline value
  # never by its value.
  fileToken = path: { key = "file:${path}"; shown = path; };
  inlineToken = where: value: {
    key = "inline:${builtins.hashString "sha256" value}";
    shown = "set inline as ${where} (sha256 ${builtins.substring 0 12 (builtins.hashString "sha256" value)}…)";
  };

  # The tokens a Telegram section (the channel, or one of its accounts) names.
  sectionTokens = where: section:
    (if builtins.isString (section.tokenFile or null) then [ (fileToken section.tokenFile) ] else [ ])
    ++ (if builtins.isString (section.botToken or null) then [ (inlineToken "${where}.botToken" section.botToken) ] else [ ]);

  # Telegram is off on a host only when both the channel and the plugin are
  # (a plugin left on with the token in its environment may still poll).
  telegramOn = gateway:
    let
      channel = gateway.channels.telegram or null;
      channelOn = isSet channel && (channel.enabled or true) != false;
      pluginOn = on (gateway.plugins.entries.telegram.enabled or false);
    in
    channelOn || pluginOn;

  # Every token one host polls with, deduplicated: the channel's, its
  # enabled accounts', and TELEGRAM_BOT_TOKEN of the gateway's environment
  # (services.clawdinator.telegramBotTokenFile or extraSecretEnv).
  hostTokens = host:
    let
      gateway = host.gateway;
      channel = gateway.channels.telegram or { };
      accounts = if isSet (channel.accounts or null) then channel.accounts else { };
      accountTokens = builtins.concatLists (builtins.attrValues (builtins.mapAttrs
        (id: account: if isSet account && (account.enabled or true) != false then sectionTokens "channels.telegram.accounts.${id}" account else [ ])
        accounts));
      envFiles = builtins.filter builtins.isString [ host.telegramBotTokenFile host.envTokenFile ];
      all = (if isSet channel then sectionTokens "channels.telegram" channel else [ ]) ++ accountTokens ++ map fileToken envFiles;
      keys = builtins.foldl' (seen: t: if builtins.elem t.key (map (s: s.key) seen) then seen else seen ++ [ t ]) [ ] all;
    in
    if host.enabled && telegramOn gateway then keys else [ ];

  # What a NixOS configuration of this fleet tells about Telegram.
  fromConfig = config: {
    enabled = config.services.openclaw-gateway.enable or false;
    gateway = config.services.openclaw-gateway.config or { };
    telegramBotTokenFile = config.services.clawdinator.telegramBotTokenFile or null;
    envTokenFile = config.services.clawdinator.extraSecretEnv.TELEGRAM_BOT_TOKEN or null;
  };
in
rec {
  inherit fromConfig;

  # name -> the tokens that host polls with ({ key; shown; }).
  pollers = hosts: builtins.mapAttrs (_: hostTokens) hosts;

  # hosts: name -> fromConfig of its evaluated configuration. One message
  # per token more than one host enables, naming the hosts, the token and
  # the fix; empty when each token has at most one poller.
  problems = hosts:
    let
      byHost = pollers hosts;
      names = builtins.attrNames byHost;
      tokens = builtins.foldl' (seen: t: if builtins.elem t.key (map (s: s.key) seen) then seen else seen ++ [ t ]) [ ] (builtins.concatLists (builtins.attrValues byHost));
      holders = token: builtins.filter (n: builtins.elem token.key (map (t: t.key) byHost.${n})) names;
      quoted = ns: builtins.concatStringsSep " and " (map (n: "`${n}`") ns);
      message = token: ns:
        "Telegram: hosts ${quoted ns} enable the same bot token, ${token.shown}: two pollers of one bot take each other's updates. "
        + "Keep Telegram on one host and turn it off on the others in nix/hosts/<name>.nix "
        + "(services.clawdinator.config.channels.telegram.enabled = false and plugins.entries.telegram.enabled = false).";
    in
    builtins.concatMap (token: let ns = holders token; in if builtins.length ns > 1 then [ (message token ns) ] else [ ]) tokens;
}
