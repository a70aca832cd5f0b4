# Shared memory: on EFS (NFS 4.1 through a verified TLS tunnel) or in the
# state directory, prepared with its directories and templates at boot.
{ config, lib, pkgs, ... }:

let
  h = import ./lib.nix { inherit config lib; };
  inherit (h) cfg etc command given regionWords ownerWords harden oneshot nullOrStr runTime;
  inherit (lib) literalExpression mkEnableOption mkIf mkOption optional types;
in
{
  options.services.clawdinator = {
    memoryDir = mkOption {
      type = types.externalPath;
      default = if cfg.memoryEfs.enable then cfg.memoryEfs.mountPoint else "${cfg.stateDir}/memory";
      defaultText = literalExpression ''memoryEfs.mountPoint when memoryEfs.enable, else "''${stateDir}/memory"'';
      description = "Shared memory (the agents' `clawdinator memory` root).";
    };

    memoryEfs = {
      enable = mkEnableOption "shared memory on EFS, NFS over TLS through stunnel";
      fileSystemId = nullOrStr (runTime "The EFS file system id (fs-…)" "efs-id");
      region = nullOrStr (runTime "The EFS file system's region" "region");
      mountPoint = mkOption { type = types.externalPath; default = "/memory"; description = "Where the file system is mounted."; };
    };

    memoryTemplateDir = mkOption {
      type = types.path;
      default = ../../../memory;
      defaultText = literalExpression "./memory";
      description = "Shared memory templates; each one memory lacks is added at boot.";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.memoryEfs.fileSystemId == null || builtins.match "fs-[0-9a-f]{8,40}" cfg.memoryEfs.fileSystemId != null;
        message = "services.clawdinator.memoryEfs.fileSystemId \"${toString cfg.memoryEfs.fileSystemId}\" is not an EFS id (fs- then hex digits); leave it null to read ${etc}/efs-id at boot.";
      }
    ];

    systemd.tmpfiles.rules = optional (!cfg.memoryEfs.enable) "d ${cfg.memoryDir} 2770 ${cfg.user} ${cfg.group} - -";

    systemd.services.clawdinator-efs-stunnel = mkIf cfg.memoryEfs.enable {
      description = "clawdinator: TLS tunnel carrying NFS to the fleet's EFS";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "amazon-init.service" ];
      serviceConfig = harden { rw = [ ]; } // {
        DynamicUser = true;
        RuntimeDirectory = "clawdinator-efs";
        ExecStartPre = command (
          [ "host" "efs-stunnel-config" "--out" "/run/clawdinator-efs/stunnel.conf" "--ca-file" "${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt" ]
            ++ given cfg.memoryEfs.fileSystemId "--file-system-id" "--file-system-id-file" "efs-id"
            ++ regionWords cfg.memoryEfs.region
        );
        ExecStart = "${pkgs.stunnel}/bin/stunnel /run/clawdinator-efs/stunnel.conf";
        Restart = "always";
        RestartSec = 5;
      };
    };

    fileSystems = mkIf cfg.memoryEfs.enable {
      ${cfg.memoryEfs.mountPoint} = {
        device = "127.0.0.1:/";
        fsType = "nfs4";
        options = [
          "nfsvers=4.1"
          "rsize=1048576"
          "wsize=1048576"
          "hard"
          "timeo=600"
          "retrans=2"
          "noresvport"
          "_netdev"
          "x-systemd.requires=clawdinator-efs-stunnel.service"
          "x-systemd.after=clawdinator-efs-stunnel.service"
        ];
      };
    };

    systemd.services.clawdinator-memory-init = {
      description = "clawdinator: shared memory directories and templates in ${cfg.memoryDir}";
      wantedBy = [ "multi-user.target" ];
      unitConfig.RequiresMountsFor = [ cfg.memoryDir ];
      serviceConfig = oneshot // harden {
        caps = [ "CAP_CHOWN" "CAP_DAC_OVERRIDE" "CAP_FOWNER" "CAP_FSETID" ];
        rw = [ cfg.memoryDir ];
      } // {
        ExecStart = command ([ "memory" "init" "--root" cfg.memoryDir "--templates" "${cfg.memoryTemplateDir}" ] ++ ownerWords);
      };
    };
  };
}
