//! A host's own units: their jobs (memory, workspace, EFS tunnel, first
//! switch, self-update, GitHub snapshot), the release lane's `host switch`
//! and the public tree's `host publish-tree`.

mod jobs;
mod publish;
mod refresh;
mod switch;
