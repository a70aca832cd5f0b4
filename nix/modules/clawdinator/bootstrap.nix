# Bootstrap and secrets: this instance's bundle from S3 at boot, its
# secrets into /run/agenix (decrypted from the bundle, or from Secrets
# Manager), and the repository seeds copied into the agents' clones.
{ config, lib, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg agenix command given regionWords ownerWords harden oneshot nullOrStr runTime reposDir rootDir;
  inherit (lib) mkEnableOption mkIf mkOption optional types;
  # The bots' App key stays root's: only root's token unit reads it.
  rootOnly = lib.optionals (lib.hasPrefix "${agenix}/" cfg.githubApp.privateKeyFile) [ "--root-only" (baseNameOf cfg.githubApp.privateKeyFile) ];
  secretsWords =
    if cfg.secretsSource == "bundle" then
      [ "secrets" "install" "--from" cfg.bootstrap.secretsDir "--identity" cfg.bootstrap.ageKeyPath "--dest" agenix ] ++ ownerWords ++ rootOnly
    else
      [ "secrets" "fetch" "--dest" agenix "--instances" "${../../instances.json}" "--spec" "${../../secrets.json}" ]
      ++ given cfg.instanceName "--instance" "--instance-file" "instance-name"
      ++ ownerWords ++ rootOnly ++ regionWords cfg.bootstrap.region;
in
{
  options.services.clawdinator = {
    bootstrap = {
      enable = mkEnableOption "fetching this instance's bundle from S3 at boot (clawdinator-bootstrap.service)";
      s3Bucket = nullOrStr (runTime "The bucket holding the bundles" "bucket");
      s3Prefix = nullOrStr (runTime "This instance's bundle prefix (bootstrap/<name>)" "bootstrap-prefix");
      region = nullOrStr (runTime "The bucket's region" "region");
      secretsDir = mkOption { type = types.externalPath; default = "${rootDir}/nix-secrets"; description = "The bundle's age files (a link into the bundle's current generation); under ${rootDir}, root's alone."; };
      repoSeedsDir = mkOption { type = types.externalPath; default = "${rootDir}/repo-seeds"; description = "The bundle's repository seeds (a link into the current generation); under ${rootDir}, root's alone."; };
      ageKeyPath = mkOption { type = types.externalPath; default = "${rootDir}/clawdinator.agekey"; description = "The bundle's age identity (a link into the current generation); under ${rootDir}, root's alone."; };
    };

    secretsSource = mkOption {
      type = types.enum [ "bundle" "secretsmanager" ];
      default = "bundle";
      description = ''
        Where /run/agenix comes from: `bundle` decrypts the bundle's age files
        (`clawdinator secrets install`); `secretsmanager` reads this
        instance's secrets from AWS Secrets Manager (`clawdinator secrets fetch`).
      '';
    };

    discordTokenFile = nullOrStr "File holding this instance's Discord bot token (DISCORD_BOT_TOKEN).";
    anthropicApiKeyFile = nullOrStr "File holding the Anthropic API key (ANTHROPIC_API_KEY).";
    openaiApiKeyFile = nullOrStr "File holding the OpenAI API key (OPENAI_API_KEY).";
    telegramBotTokenFile = nullOrStr "File holding the Telegram bot token (TELEGRAM_BOT_TOKEN).";
    extraSecretEnv = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { CLAWDINATOR_TELEGRAM_ALLOW_FROM = "/run/agenix/clawdinator-telegram-allow-from"; };
      description = "More gateway variables read from files: NAME = file.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.secretsSource != "bundle" || cfg.bootstrap.enable;
        message = "services.clawdinator.secretsSource = \"bundle\" decrypts the bootstrap bundle's age files: set services.clawdinator.bootstrap.enable = true, or secretsSource = \"secretsmanager\".";
      }
      {
        assertion = lib.all (p: lib.hasPrefix "${rootDir}/" p) [ cfg.bootstrap.secretsDir cfg.bootstrap.repoSeedsDir cfg.bootstrap.ageKeyPath ];
        message = "services.clawdinator.bootstrap.secretsDir, repoSeedsDir and ageKeyPath are links root follows: keep them under ${rootDir} (root's alone), never in a directory an agent can write.";
      }
    ];

    systemd.services.clawdinator-bootstrap = mkIf cfg.bootstrap.enable {
      description = "clawdinator: fetch this instance's bundle (secrets, repository seeds) from S3";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      # amazon-init runs user data, which writes ${etc}/ on first boot.
      after = [ "network-online.target" "amazon-init.service" ];
      serviceConfig = oneshot // harden {
        rw = lib.unique [ rootDir (builtins.dirOf cfg.bootstrap.secretsDir) (builtins.dirOf cfg.bootstrap.repoSeedsDir) (builtins.dirOf cfg.bootstrap.ageKeyPath) ];
      } // {
        ExecStart = command (
          [ "bootstrap" "fetch" ]
            ++ given cfg.bootstrap.s3Bucket "--bucket" "--bucket-file" "bucket"
            ++ given cfg.bootstrap.s3Prefix "--prefix" "--prefix-file" "bootstrap-prefix"
            ++ [
            "--secrets-dir"
            cfg.bootstrap.secretsDir
            "--repo-seeds-dir"
            cfg.bootstrap.repoSeedsDir
            "--age-key-path"
            cfg.bootstrap.ageKeyPath
            "--state-dir"
            "${rootDir}/bootstrap"
          ]
            ++ regionWords cfg.bootstrap.region
        );
      };
    };

    systemd.services.clawdinator-secrets = {
      description = "clawdinator: this instance's secrets into ${agenix} (${cfg.secretsSource})";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "amazon-init.service" ] ++ optional cfg.bootstrap.enable "clawdinator-bootstrap.service";
      requires = optional (cfg.secretsSource == "bundle") "clawdinator-bootstrap.service";
      serviceConfig = oneshot // harden {
        # Files owned by the service user, in a root directory.
        caps = [ "CAP_CHOWN" "CAP_DAC_OVERRIDE" ];
        rw = [ agenix ];
      } // {
        ExecStart = command secretsWords;
      };
    };

    systemd.services.clawdinator-repo-seed = mkIf cfg.bootstrap.enable {
      description = "clawdinator: copy each repository the host lacks from the bundle's seeds into ${reposDir}";
      wantedBy = [ "multi-user.target" ];
      after = [ "clawdinator-bootstrap.service" ];
      requires = [ "clawdinator-bootstrap.service" ];
      serviceConfig = oneshot // harden {
        caps = [ "CAP_CHOWN" "CAP_DAC_OVERRIDE" "CAP_FOWNER" ];
        rw = [ reposDir ];
      } // {
        ExecStart = command ([ "bootstrap" "seeds" "install" "--from" cfg.bootstrap.repoSeedsDir "--dest" reposDir ] ++ ownerWords);
      };
    };
  };
}
