//! The engines p2pu drives: Serf, Transmission, Puppet, systemd.
pub mod systemd;
