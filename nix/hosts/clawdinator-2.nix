# clawdinator-2: Discord only. One Telegram bot token has one poller
# (clawdinator-1): Telegram gives each update to a single getUpdates
# caller, so a second host polling the same bot would take half of its
# messages. Channel and plugin are off, and neither the token nor the
# allow-list is in this gateway's configuration or environment (the
# gateway refuses a configuration naming a variable it lacks). The flake refuses any fleet in
# which two hosts enable one token (nix/gateway/telegram.nix).
{ lib, ... }:
{
  services.clawdinator = {
    telegramBotTokenFile = lib.mkForce null;
    # Only Telegram's allow-list is read into the environment fleet-wide.
    extraSecretEnv = lib.mkForce { };
    config = {
      channels.telegram = lib.mkForce { enabled = false; };
      plugins.entries.telegram.enabled = lib.mkForce false;
    };
  };
}
