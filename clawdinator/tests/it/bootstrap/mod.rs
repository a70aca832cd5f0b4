//! Bootstrap: the bundles (upload, fetch, isolation, refusals) and the
//! repository seeds they carry.

mod bundles;
mod seeds;
