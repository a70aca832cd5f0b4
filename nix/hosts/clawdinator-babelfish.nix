# babelfish: the translation bot. Chinese <-> English in two Discord
# channels, nothing else: its own small workspace, one model, an agent with
# every tool denied, no Telegram, no commands, no GitHub snapshot, no cron.
{ lib, ... }:

let
  # The same rules in each channel it serves.
  channel = {
    allow = true;
    requireMention = false;
    includeThreadStarter = false;
    users = [ "*" ];
    skills = [ ];
    systemPrompt = builtins.readFile ../../clawdinator/workspace-babelfish/TRANSLATE.md;
  };
in
{
  services.clawdinator = {
    workspaceDir = "/var/lib/clawd/workspace-babelfish";
    workspaceTemplateDir = ../../clawdinator/workspace-babelfish;
    cronJobsFile = lib.mkForce null;
    githubSync.enable = lib.mkForce false;
    telegramBotTokenFile = lib.mkForce null;
    extraSecretEnv = lib.mkForce { };

    config = lib.mkForce {
      gateway = {
        mode = "local";
        bind = "loopback";
        auth.token = "clawdinator-local";
      };
      logging.level = "info";

      agents = {
        defaults = {
          maxConcurrent = 2;
          skipBootstrap = true;
          models."openai/gpt-5.2" = { alias = "gpt"; };
          model = {
            primary = "openai/gpt-5.2";
            fallbacks = [ ];
          };
          thinkingDefault = "medium";
          envelopeTimestamp = "off";
          envelopeElapsed = "off";
        };
        list = [
          {
            id = "babelfish";
            default = true;
            identity.name = "CLAWDINATOR-BABELFISH";
            tools = {
              profile = "minimal";
              deny = [ "*" ];
            };
          }
        ];
      };

      commands = {
        native = false;
        nativeSkills = false;
        text = false;
        bash = false;
        config = false;
        debug = false;
        restart = false;
        useAccessGroups = true;
      };

      messages = {
        groupChat = {
          mentionPatterns = [ ];
          historyLimit = 1;
        };
        queue = {
          mode = "interrupt";
          byChannel.discord = "interrupt";
        };
      };

      plugins = {
        slots.memory = "none";
        entries.discord.enabled = true;
        entries.telegram.enabled = false;
      };

      skills.allowBundled = [ ];

      tools = {
        profile = "minimal";
        deny = [ "*" ];
        media.image = {
          enabled = true;
          maxChars = 1200;
          attachments = {
            mode = "all";
            maxAttachments = 4;
          };
          prompt = "Extract the text of the image for translation, in its own language and layout. Without text, answer: (no translatable text detected).";
          models = [{ provider = "openai"; model = "gpt-5.2"; }];
        };
      };

      channels.discord = {
        enabled = true;
        dm.enabled = false;
        configWrites = false;
        commands = {
          native = false;
          nativeSkills = false;
        };
        groupPolicy = "allowlist";
        historyLimit = 0;
        replyToMode = "first";
        guilds."1456350064065904867" = {
          requireMention = false;
          channels = {
            "1467469670192910387" = channel; # #help-中文
            "1468983176620675132" = channel; # #tech-中国
          };
        };
      };
    };
  };
}
