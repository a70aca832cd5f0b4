//! The control API's integration tests: the handler alone, its deploy
//! cooldowns, and the whole path from the host's client through a loopback
//! function URL.

mod common;
mod cooldown;
mod end_to_end;
mod handler;
mod load;
