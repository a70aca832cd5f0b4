# What every host of this fleet shares, the image included: the features
# it runs and the gateway's settings. Per-instance facts come from the
# registry (nix/lib/hosts.nix) or, at boot, from /etc/clawdinator/ (the
# instance's user data): nothing here names a bucket, a file system or an
# account.
{ config, lib, ... }:

let
  name = config.services.clawdinator.instanceName;
in
{
  services.clawdinator = {
    enable = true;
    bootstrap.enable = true;
    memoryEfs.enable = true;

    anthropicApiKeyFile = "/run/agenix/clawdinator-anthropic-api-key";
    openaiApiKeyFile = "/run/agenix/clawdinator-openai-api-key-peter-2";
    telegramBotTokenFile = "/run/agenix/clawdinator-telegram-bot-token";
    extraSecretEnv.CLAWDINATOR_TELEGRAM_ALLOW_FROM = "/run/agenix/clawdinator-telegram-allow-from";

    # The openclaw GitHub App (ids are public; its key is the secret
    # clawdinator-github-app.pem).
    githubApp = {
      enable = true;
      appId = "2607181";
      installationId = "102951645";
    };
    githubSync = {
      enable = true;
      org = "openclaw";
    };

    # The shared gateway configuration (data, one file), and the agent named
    # after the instance, as the registry names it.
    config = lib.recursiveUpdate (import ../gateway/fleet.nix) (lib.optionalAttrs (name != null) {
      agents.list = [
        {
          id = "main";
          default = true;
          identity.name = lib.toUpper name;
        }
      ];
    });
  };

  # Hosts only fetch and activate systems CI built (cache.nix); the new CLI
  # is for operators in a session.
  nix.settings.experimental-features = [ "nix-command" "flakes" ];
  time.timeZone = "UTC";
  # The release of the pinned nixpkgs (systems are named
  # nixos-system-<host>-26.05.*), as the original fleet had it. Hosts are
  # cattle: each starts from an image of this repository and keeps no
  # state across a replacement that a later release would have to migrate.
  system.stateVersion = "26.05";
}
