# The only commands CI can run on hosts: one SSM document per fleet command,
# each running one fixed host command; every parameter is checked by SSM
# against its document's allowedPattern (the switch's store path against
# ^/nix/store/[0-9a-z]{32}-nixos-system-…$, logs' and restart's unit against the fleet's unit names).
# The CI role may send the switch and refresh-secrets documents and no
# other (no AWS-RunShellScript); logs and restart are for operators.

resource "aws_ssm_document" "host_command" {
  for_each = {
    switch            = "clawdinator-switch"
    "refresh-secrets" = "clawdinator-refresh-secrets"
    logs              = "clawdinator-logs"
    restart           = "clawdinator-restart"
  }

  name            = each.value
  document_type   = "Command"
  document_format = "JSON"
  content         = file("${path.module}/ssm/${each.key}.json")
}
