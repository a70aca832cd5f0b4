# clawdinator-1 publishes the PR-intent tree of shared memory to the public
# bucket (it is OpenTofu's default pr_intent_publishers).
{
  services.clawdinator.publicTree.enable = true;
}
