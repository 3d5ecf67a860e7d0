//! The agent's own loop: the spool it is woken by, intake's decisions, the state it records,
//! the supervised serving child, catch-up, the membership it reads and the status it reports.

pub mod catchup;
pub mod intake;
pub mod peers;
pub mod run;
pub mod spool;
pub mod state;
pub mod status;
pub mod supervise;
