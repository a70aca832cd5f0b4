//! A host's own units: their jobs (memory, workspace, EFS tunnel, first
//! switch, self-update, GitHub snapshot) and the release lane's `host switch`.

mod jobs;
mod refresh;
mod switch;
