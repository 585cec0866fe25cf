//! End-to-end tests: real nodes, real guests built from source.

mod abi;
mod cli;
mod cluster_code;
mod conflict_free;
mod coord;
mod coord_faults;
mod dashboard;
mod dist;
mod fragments;
mod hibernate;
mod limits;
mod messaging;
mod netns;
mod observe;
mod otp;
mod pg;
mod replicated;
mod replicated_faults;
mod service;
mod several_tables;
mod signals;
mod supervisor;
mod tables;
mod top;
mod upgrade;
mod watch;
