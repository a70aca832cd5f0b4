# The only commands CI can run on hosts: one SSM document per fleet command,
# each running one fixed host command; the switch takes a revision that
# SSM itself checks against ^[0-9a-f]{40}$. The CI role may send these
# documents and no other (no AWS-RunShellScript).

resource "aws_ssm_document" "host_command" {
  for_each = {
    switch            = "clawdinator-switch"
    "refresh-secrets" = "clawdinator-refresh-secrets"
  }

  name            = each.value
  document_type   = "Command"
  document_format = "JSON"
  content         = file("${path.module}/ssm/${each.key}.json")
}
