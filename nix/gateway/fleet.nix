# The gateway configuration every clawdinator shares (OpenClaw's JSON, as
# Nix data): models, agents' defaults, logging, sessions, messages,
# plugins, skills, Discord and Telegram. A host differs only through
# nix/hosts/<name>.nix; secrets appear only as files or as variables the
# gateway reads from its environment (`host exec` fills them from files).
# The module adds what it owns (port, workspace, cron store, log path).
# What each host's gateway finally reads is rendered and compared with
# nix/gateway/golden/<name>.json by `cargo xtask test`.
{
  gateway = {
    mode = "local";
    bind = "loopback";
    # Loopback only: the local clients' shared word, not a credential.
    auth.token = "clawdinator-local";
  };

  agents.defaults = {
    maxConcurrent = 4;
    skipBootstrap = true;
    models = {
      "anthropic/claude-opus-4-6" = { alias = "Opus"; };
      "openai/gpt-5.2-codex" = { alias = "Codex"; };
    };
    model = {
      primary = "openai/gpt-5.2-codex";
      fallbacks = [ "anthropic/claude-opus-4-6" ];
    };
    # Reasoning effort for the models that take one.
    thinkingDefault = "high";
  };

  logging.level = "info";

  session.sendPolicy = {
    default = "allow";
    rules = [ ];
  };

  messages = {
    groupChat.mentionPatterns = [ ];
    queue = {
      mode = "interrupt";
      byChannel = {
        discord = "interrupt";
        telegram = "interrupt";
        whatsapp = "interrupt";
        webchat = "queue";
      };
    };
  };

  plugins = {
    slots.memory = "none";
    entries.discord.enabled = true;
    entries.telegram.enabled = true;
  };

  skills.allowBundled = [ "github" "clawdhub" "coding-agent" ];

  channels = {
    discord = {
      enabled = true;
      dm.enabled = false;
      # The OpenClaw server; ids are listed with their purpose in memory/discord.md.
      guilds."1456350064065904867" = {
        requireMention = true;
        channels."1458426982579830908" = {
          # #clawdinators-test, mention-only
          allow = true;
          requireMention = true;
          users = [ "*" ];
        };
      };
    };
    telegram = {
      enabled = true;
      dmPolicy = "allowlist";
      # Expanded by the gateway from its environment (clawdinator-telegram-allow-from).
      allowFrom = [ "\${CLAWDINATOR_TELEGRAM_ALLOW_FROM}" ];
      groupPolicy = "disabled";
      tokenFile = "/run/agenix/clawdinator-telegram-bot-token";
    };
  };
}
