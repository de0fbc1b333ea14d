//! Integration tests: the real `ota` binary and library against `ota-serve` on loopback,
//! over real git repositories, on the real filesystem. Nothing leaves 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod util;

mod archive;
mod channels;
mod cli;
mod config;
mod corpus;
mod embed;
mod faults;
mod fleet;
mod github_signed;
mod guards;
mod hooks;
mod limits;
mod network;
mod original;
mod original_delta;
mod previous;
mod private;
mod progress;
mod publish;
mod published_site;
mod race;
mod recover;
mod release;
mod report;
mod resume;
mod safety;
mod schedule;
mod signals;
mod static_site;
mod trial;
mod trust;
mod update;
